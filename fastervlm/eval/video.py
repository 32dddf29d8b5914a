"""TEMPORARY stand-in until the videoqa branch lands."""
from PIL import Image


def load_frames(path: str, num_frames: int) -> list[Image.Image]:
    raise NotImplementedError
