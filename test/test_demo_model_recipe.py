"""The demo model's recipe script (``sparsebev_cli/demo/train_model.py``) on a toy dataset:
the options of its fine-tuning stage (docs/demo_model.md) do what they say."""
import json

import torch

from sparsebev_cli.demo import train_model
from sparsebev_core.loading import bundled_checkpoint


def test_fine_tuning_stage_starts_from_the_init_weights_and_trains_on_every_world(tmp_path):
    """``--extra-data`` generates each missing world with the next seed and adds all its scenes
    to the training set; ``--init-from`` loads the weights the run starts from (with a learning rate
    of ~0 the exported model is the init model); the file's meta records both."""
    init = bundled_checkpoint('tiny')
    data, extra, work = tmp_path / 'w0', tmp_path / 'w1', tmp_path / 'work'
    threads = torch.get_num_threads()
    try:
        code = train_model.main([
            '--data', str(data), '--extra-data', str(extra), '--scenes', '2', '--keyframes', '2',
            '--data-seed', '4', '--init-from', str(init), '--work-dir', str(work), '--epochs', '1',
            '--max-iters', '2', '--lr', '1e-12', '--lr-by-iteration', '--stop-prev-grad', '1',
            '--export', str(tmp_path / 'out.pth')])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert json.loads((extra / 'synthetic.json').read_text())['seed'] == 5

    cfg = train_model.get_preset('tiny')
    scenes = train_model.training_scenes(cfg, data, [str(extra)])
    only_first = train_model.training_scenes(cfg, data, [])
    world1 = [train_model.build_dataset(cfg, extra, version=train_model.VERSION, split=s)
              for s in ('train', 'val')]
    assert len(scenes) == len(only_first) + sum(len(d) for d in world1) > len(only_first)

    saved = torch.load(tmp_path / 'out.pth', map_location='cpu', weights_only=False)
    start = torch.load(init, map_location='cpu', weights_only=False)['state_dict']
    weights = [k for k, v in start.items() if v.is_floating_point() and 'running' not in k]
    assert all(torch.equal(saved['state_dict'][k], start[k].half()) for k in weights)
    assert saved['meta']['init_from'] == str(init) and saved['meta']['extra_data'] == [str(extra)]
    assert saved['meta']['init_meta']['mAP'] > 0.1           # the recipe of the init weights
    assert saved['meta']['stop_prev_grad'] == 1 and saved['meta']['lr_by_iteration']
