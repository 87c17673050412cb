"""Every stable key the ROS layer reports, in one place.

The keys are public: they name the node's diagnostics values (``skipped_<key>``,
``resets_<key>``, ``sync_<key>``, ``missing_<camera>/<key>``), the replay summary, the warning
lines and ``CameraView.missing`` reasons, and tests compare against them. A new reason is added
here, to its tuple, and used by name; ``test/test_ros_reasons.py`` checks that the node reports
nothing else.

* :data:`MISSING_REASONS`: why a camera is missing from a camera set (the synchroniser) or from
  a frame (``FrameAssembler``: the frame then goes ahead degraded);
* :data:`SKIP_REASONS`: why a frame was not published (``Skip.reason``): a whole-frame problem,
  or the first missing camera's reason when fewer than ``min_cameras`` are present;
* :data:`SYNC_COUNTS`: what the synchroniser dropped or did (``AnchorSynchronizer.counts``);
* :data:`NODE_COUNTS`: what the node itself counts;
* the reset keys are the core's (``sparsebev_core.resets``, one vocabulary for every layer),
  re-exported here; the ROS pipeline decides :data:`ROS_RESETS`.
"""
from __future__ import annotations

from sparsebev_core.resets import (CAMERA_TIME_SPREAD, CLOCK_JUMP, EXPLICIT,  # noqa: F401
                                   IMAGE_SIZE_CHANGED, INVALID_FRAME, RESET_REASONS, RIG_CHANGED,
                                   TIME_BACKWARDS, TIME_GAP)

# ------------------------------------------------------------- a camera missing from a set / frame
LATE = 'late'                                 # not there at the set's deadline (synchroniser)
NO_IMAGE = 'no_image'                         # nothing within the window (synchroniser)
OUT_OF_WINDOW = 'out_of_window'               # dropped to keep the set within the window
MISSING_CAMERA = 'missing_camera'             # no image for the camera (no reason given)
MISSING_CAMERA_INFO = 'missing_camera_info'
ZERO_CAMERA_INFO = 'zero_camera_info'
CAMERA_INFO_SIZE = 'camera_info_size_mismatch'
MISSING_FRAME_ID = 'missing_frame_id'
TF_UNAVAILABLE = 'tf_unavailable'
TF_EXTRAPOLATION = 'tf_extrapolation'
DECODE_ERROR = 'decode_error'
UNSUPPORTED_ENCODING = 'unsupported_encoding'
ZERO_STAMP = 'zero_stamp'                     # header.stamp unset (also a synchroniser count)
IMAGE_TOO_LARGE = 'image_too_large'
DISTORTED_IMAGE = 'distorted_image'           # distorted raw image, distorted_images: refuse
UNSUPPORTED_DISTORTION = 'unsupported_distortion'   # a distortion we cannot undistort

SYNC_MISSING_REASONS: tuple[str, ...] = (LATE, NO_IMAGE, OUT_OF_WINDOW)
"""Why the synchroniser emits a set without a camera."""
MISSING_REASONS: tuple[str, ...] = SYNC_MISSING_REASONS + (
    MISSING_CAMERA, MISSING_CAMERA_INFO, ZERO_CAMERA_INFO, CAMERA_INFO_SIZE, MISSING_FRAME_ID,
    TF_UNAVAILABLE, TF_EXTRAPOLATION, DECODE_ERROR, UNSUPPORTED_ENCODING, ZERO_STAMP,
    IMAGE_TOO_LARGE, DISTORTED_IMAGE, UNSUPPORTED_DISTORTION)

# ------------------------------------------------------------- a frame not published
DUPLICATE_FRAME = 'duplicate_frame'           # the same anchor stamp twice in a row
STALE_FRAME = 'stale_frame'                   # an image set re-delivered after newer ones

SKIP_REASONS: tuple[str, ...] = MISSING_REASONS + (
    CAMERA_TIME_SPREAD, DUPLICATE_FRAME, STALE_FRAME, INVALID_FRAME)
"""``Skip.reason``: a camera's reason (too few cameras present), the camera stamps spread over
``max_camera_time_diff`` (also a reset), a duplicate or stale set, a frame the detector
refused (also a reset)."""

# ------------------------------------------------------------- synchroniser counts
DUPLICATE = 'duplicate'                       # a stamp already emitted
LATE_AFTER_EMIT = 'late_after_emit'           # arrived after its set was emitted
QUEUE_OVERFLOW = 'queue_overflow'
SYNC_COUNTS: tuple[str, ...] = (ZERO_STAMP, DUPLICATE, LATE_AFTER_EMIT, TIME_BACKWARDS,
                                QUEUE_OVERFLOW)
"""Keys of ``AnchorSynchronizer.counts`` (``time_backwards``: a bag loop, the reset key's
word)."""

# ------------------------------------------------------------- the node's own counts
NO_SUBSCRIBERS = 'no_subscribers'             # a set not processed: nobody listens
NODE_COUNTS: tuple[str, ...] = (NO_SUBSCRIBERS,)

# ------------------------------------------------------------- temporal-memory resets
ROS_RESETS: tuple[str, ...] = (CAMERA_TIME_SPREAD, IMAGE_SIZE_CHANGED, INVALID_FRAME, CLOCK_JUMP)
"""Reset keys the ROS layer decides (the pipeline's rules, and the node's clock jumping back;
the others: the detector's time and rig rules, and ``explicit`` for ``~/reset``)."""
