# Two levels down: more frames, a larger input, a frozen stem, BGR normalisation
# (nested overrides of the merged model dict, and `_delete_` replacing a whole dict).
_base_ = ['./tiny_196q.py']

num_frames = 6
img_norm_cfg = dict(
    _delete_=True,
    mean=[103.530, 116.280, 123.675],
    std=[57.375, 57.120, 58.395],
    to_rgb=False)

model = dict(
    data_aug=dict(img_norm_cfg=img_norm_cfg),
    img_backbone=dict(frozen_stages=0),
    pts_bbox_head=dict(transformer=dict(num_frames=num_frames)))

ida_aug_conf = {
    'resize_lim': (0.9, 1.3),
    'final_dim': (128, 352),
    'bot_pct_lim': (0.0, 0.0),
    'rot_lim': (0.0, 0.0),
    'H': 225, 'W': 400,
    'rand_flip': False,
}

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, color_type='color'),
    dict(type='LoadMultiViewImageFromMultiSweeps', sweeps_num=num_frames - 1),
    dict(type='RandomTransformImage', ida_aug_conf=ida_aug_conf, training=True),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, color_type='color'),
    dict(type='LoadMultiViewImageFromMultiSweeps', sweeps_num=num_frames - 1, test_mode=True),
    dict(type='RandomTransformImage', ida_aug_conf=ida_aug_conf, training=False),
]
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline))
