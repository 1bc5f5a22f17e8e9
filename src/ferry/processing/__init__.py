"""Pre- and postprocessing declared as data in the manifest, run by `ferry predict` and the server.

Each step is `{"op": name, ...arguments}`; one function per op, in one registry per direction.
"""

from ferry.processing.image import PREPROCESS_OPS, preprocess_image, preprocess_images
from ferry.processing.outputs import POSTPROCESS_OPS, postprocess

__all__ = ["POSTPROCESS_OPS", "PREPROCESS_OPS", "postprocess", "preprocess_image", "preprocess_images"]
