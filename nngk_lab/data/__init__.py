"""Class-folder trees: reading and splitting them, transforms, images decoded into memory,
class-balanced batches, class subsets, the bundled digits and Fashion-MNIST photos, and the paper's
published releases."""

from .bundled import default_data_root, write_class_tree
from .decoded import DecodedImages, EpochAugmentation, MemoryBatches, decoded_bytes, in_batches
from .digits import DIGIT_FOLDERS, export_digits
from .fashion import FASHION_CLASSES, FASHION_FOLDERS, export_fashion, load_fashion_small
from .folders import ImageSamples, find_unreadable_images, load_rgb, scan_image_folder
from .release_tree import Prepared, class_folders, default_source, prepare, read_manifest, readable, train_command
from .releases import Entry, Release
from .samplers import ClassBalancedOrder, check_m_per_class
from .seeds import mix_seed
from .split import DataSplit, split_samples
from .subsets import class_subset
from .transforms import build_transforms, default_resize_size
