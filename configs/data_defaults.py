"""Defaults of every `config.data.*` field that `input_pipeline` reads.

A dataset config starts from `get_data_config()` and overrides what differs. The number of frames
of a clip is not here: it is the model's `num_frames`, passed to the pipeline as an argument.
"""
import ml_collections


def get_synthetic_config():
    """Settings of the generated order-only dataset (`data.source = 'synthetic'`)."""
    config = ml_collections.ConfigDict()
    config.num_classes = 8  # Even, 2..10: pairs of classes that are each other's time reversal.
    config.train_videos_per_class = 40
    config.val_videos_per_class = 10
    config.frame_height = 72
    config.frame_width = 88
    config.min_video_frames = 16  # Each video has a random length in [min, max] frames.
    config.max_video_frames = 24
    config.seed = 0  # The same seed writes the same JPEG files.
    return config


def get_data_config():
    """Returns the `data` ConfigDict with the pipeline's defaults."""
    config = ml_collections.ConfigDict()
    # Where videos come from: 'frames' (frame folders + list files), 'tfds' (the stored format:
    # datasets prepared by `python -m input_pipeline.prepare_tfds`) or 'synthetic' (generated
    # into `root`, then read as frames).
    config.source = "frames"
    # Folder the list-file video paths are relative to ('frames'), or the cache folder of the
    # generated dataset ('synthetic'; '' = a folder under the system temp dir named after the
    # synthetic settings).
    config.root = ""
    # List files, one video a line. Relative paths are taken under `root`. For 'synthetic' they are
    # set by the generator.
    config.train_list = ""
    config.val_list = ""
    # Their lines: 'official' `<video dir> <start frame> <end frame> <label>` (bLVNet-TAM's), or
    # 'tsn' `<video dir> <frames> <label>` (TSN's, TSM's, MMAction2's rawframes: frames 1 to <frames>).
    config.list_format = "official"
    config.list_separator = " "  # ';' for some Something-Something lists.
    config.image_template = "{:05d}.jpg"  # Frame file name, 1-based numbers; .jpg/.jpeg: JPEG, else PNG, BMP or GIF.
    # 'frames': text file with one class name per line, line i = label i ('' = none). A 'tfds'
    # dataset keeps its class names.
    config.class_names_file = ""
    # Labels must lie in [0, num_classes); 0 = the number of lines of `class_names_file`, or no
    # range check without one.
    config.num_classes = 0

    config.crop_size = 224  # Side of the square frames handed to the model.
    # 'uniform': TSN segments, one frame per segment; 'dense': frames `dense_stride` apart.
    config.sampling = "uniform"
    # Uniform training sampling: False = one random offset shared by all segments (the official
    # code), True = an offset per segment.
    config.independent_offsets = False
    config.dense_stride = 2
    # Training multi-scale crop: crop sides as fractions of the shorter image side; with TSN's
    # aspect jitter, height and width scales differ by at most `max_distort` positions.
    config.train_scales = (1.0, 0.875, 0.75, 0.66)
    config.max_distort = 1
    # Training horizontal flip with p=0.5. Turn off for Something-Something, whose classes say
    # "left"/"right", or give `flip_label_map`: pairs (a, b) whose labels swap when a clip flips.
    config.flip = True
    config.flip_label_map = ()
    # Evaluation resize of the shorter side before the centre crop: False = int(crop_size / 0.875
    # + 0.5) (256 for 224, the official default), True = crop_size (official --disable_scaleup).
    config.eval_resize_to_crop = False
    config.num_crops = 1  # Evaluation crops per clip: 1 (centre), 3 (along the long side) or 10.
    config.num_clips = 1  # Evaluation clips per video; views = num_crops * num_clips.

    config.prefetch = 2  # Batches prepared ahead of the accelerator.
    config.num_parallel_calls = -1  # Clips decoded at once; -1 = tf.data AUTOTUNE.
    # False: an unreadable frame is replaced by the nearest readable frame of its video; a video
    # with none is replaced by the next video in training, masked out in evaluation; all counted
    # (input_pipeline/faults.py). True: any bad input is an immediate error.
    config.strict = False
    # Training stops when more than this fraction of the last 100 examples (faults.FAULT_WINDOW)
    # had an unreadable video; examples with substituted frames do not count.
    config.max_fault_fraction = 0.5

    config.synthetic = get_synthetic_config()
    # 'tfds' only: a builder of input_pipeline.tfds_builders ('something_something_v1',
    # 'something_something_v2', 'kinetics400', 'moments_in_time', 'video_folder'), prepared with
    # `python -m input_pipeline.prepare_tfds` into `tfds_data_dir` ('' = the TFDS default).
    config.tfds_name = ""
    config.tfds_data_dir = ""
    # The --max_fps it was prepared with: 0 = every frame, F = at most F frames a second.
    config.tfds_max_fps = 0.0
    return config
