"""Writing episode videos through imageio (the optional `video` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["check_video_path", "write_video", "side_by_side"]


VIDEO_SUFFIXES = (".gif", ".mp4")


def check_video_path(path: str | Path) -> None:
    """Fail now, not after an episode, if `write_video` could not write `path`.

    Raises:
        ValueError: a suffix other than .gif or .mp4.
        ImportError: imageio (or imageio-ffmpeg for .mp4) is missing; the message says how
            to install it.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path {str(path)!r} must end in one of {list(VIDEO_SUFFIXES)}")
    try:
        import imageio.v2  # noqa: F401
    except ImportError:
        raise ImportError("writing videos needs imageio: pip install -e '.[video]'") from None
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ImportError("writing .mp4 needs imageio-ffmpeg: pip install -e '.[video]' (or use a .gif path)") from None


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 30) -> Path:
    """Write uint8 HWC frames to `path` (.mp4 via ffmpeg, .gif otherwise); atomically.

    Raises:
        ImportError: imageio (or imageio-ffmpeg for .mp4) is not installed; the message
            says how to install it.
    """
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ImportError("writing videos needs imageio: pip install -e '.[video]'") from None
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        if path.suffix.lower() == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                raise ImportError("writing .mp4 needs imageio-ffmpeg: pip install -e '.[video]' (or use a .gif path)") from None
            imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1)
        else:
            imageio.mimwrite(tmp, list(frames), duration=1000 / fps, loop=0)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two HWC frames of equal height next to each other, with a 4-pixel white gap."""
    gap = np.full((left.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)
