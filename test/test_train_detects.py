"""Training makes the tiny preset detect objects: the CI-sized version of the demo-model run.

The full run (``sparsebev_cli/demo/train_model.py``: 8 training scenes, 10 epochs, evaluated on
unseen scenes; docs/demo_model.md) takes tens of minutes on 2 cores. Here the model learns one
short synthetic scene (6 keyframes, no augmentation) for 100 iterations and the devkit scores
it on that same scene: a check that matching, losses, denoising, optimiser and the
evaluation path together turn images into boxes, not a measure of generalisation.
Measured when written (same setting): mAP 0.031 after 60 iterations, 0.094 after 120, 0.164
after 180 (1 thread: about 0.6-1.2 s per iteration on a 2-core machine).
"""
import torch

from sparsebev_core.engine.train import TrainOptions, set_random_seed, train

ITERATIONS = 100
MIN_MAP = 0.02


def test_tiny_model_learns_to_detect_the_objects_of_a_scene(tmp_path):
    from sparsebev_core.data.dataset import build_dataset
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    from sparsebev_core.engine.evaluate import evaluate
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset

    root = make_synthetic(tmp_path / 'syn', num_scenes=1, seed=5, keyframes_per_scene=6,
                          progress=False)
    cfg = get_preset('tiny')
    cfg.head.dn_groups = 3          # as the demo-model recipe: a third of the head's cost
    cfg.train.lr = 2e-3
    cfg.train.warmup_iters = 10
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        set_random_seed(0, deterministic=False)
        dataset = build_dataset(cfg, root, version='v1.0-mini', split='val', training=False)
        model = build_model(cfg)
        before = evaluate(model, cfg, root, version='v1.0-mini', split='val',
                          out_dir=tmp_path / 'eval0', progress=False)
        summary = train(cfg, dataset, TrainOptions(work_dir=str(tmp_path / 'train'), epochs=60,
                                                   max_iters=ITERATIONS, progress=False,
                                                   tensorboard=False),
                        torch.device('cpu'), model=model)
        after = evaluate(model, cfg, root, version='v1.0-mini', split='val',
                         out_dir=tmp_path / 'eval', progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary['position'].global_iteration == ITERATIONS
    assert before['mean_ap'] < 0.005
    assert after['mean_ap'] > MIN_MAP, f"mAP {after['mean_ap']:.4f} after {ITERATIONS} iterations"
