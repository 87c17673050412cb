# One level down: only the query count changes (as the official 400q config does).
_base_ = ['./tiny_base.py']

model = dict(
    pts_bbox_head=dict(num_query=196)
)
