"""``sparsebev demo`` (:mod:`.command`) and the recipe of the bundled demo model
(:mod:`.train_model`, ``python -m sparsebev_cli.demo.train_model``)."""
