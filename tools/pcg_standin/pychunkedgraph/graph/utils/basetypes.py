"""The numpy dtypes PyChunkedGraph uses for ids (little-endian 64-bit unsigned)."""

import numpy as np

NODE_ID = np.dtype("<u8")
CHUNK_ID = NODE_ID
SEGMENT_ID = NODE_ID
OPERATION_ID = NODE_ID
COUNTER = np.dtype(">i8")
COORDINATES = np.dtype("<i8")
