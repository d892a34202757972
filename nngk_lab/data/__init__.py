"""Class-folder trees: reading and splitting them, transforms, images decoded into memory,
class-balanced batches, class subsets, the embedded digits, and the paper's published releases."""

from .decoded import decoded_bytes, DecodedImages, EpochAugmentation, in_batches, MemoryBatches
from .digits import default_data_root, export_digits
from .folders import scan_image_folder, load_rgb, find_unreadable_images, ImageSamples
from .release_tree import Prepared, train_command, read_manifest, readable, class_folders, default_source, prepare
from .releases import Entry, Release
from .samplers import check_m_per_class, ClassBalancedOrder
from .seeds import mix_seed
from .split import DataSplit, split_samples
from .subsets import class_subset
from .transforms import default_resize_size, build_transforms
