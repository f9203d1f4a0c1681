"""`ftkd predict-images MODEL --images DIR --calib calib.json --out detections.json`: raw camera images in, boxes out.

MODEL is a checkpoint or an `ftkd export` .onnx file. DIR holds either one frame (six files named after the cameras,
e.g. CAM_FRONT.jpg) or one sub-folder per frame (sorted by name = time order), each with the six files. Ego poses and
timestamps come from `--poses poses.json` ({"<frame folder>": {"timestamp": s, "translation": [x, y, z],
"rotation": [w, x, y, z]} or {"timestamp": s, "ego_pose": 4x4}}); without it the ego is taken as standing still and
frames `--frame-interval` seconds apart. The temporal state is carried from frame to frame. Boxes are written in each
frame's ego frame (x forward, y left, z up; x, y, z, w, l, h, yaw, vx, vy).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a student checkpoint (.pt) or an exported graph (.onnx)")
    parser.add_argument("--images", required=True, help="folder of one frame (CAM_*.jpg) or of frame sub-folders")
    parser.add_argument("--calib", required=True, help="calibration JSON (docs/deploy.md)")
    parser.add_argument("--poses", default=None, help="per-frame timestamp and ego pose JSON (default: standing still)")
    parser.add_argument("--frame-interval", type=float, default=0.5, help="seconds between frames without --poses")
    parser.add_argument("--out", required=True, help="detections JSON to write")
    parser.add_argument("--device", default="cpu", help="PyTorch device for a checkpoint (default cpu)")


def find_camera_files(folder: Path) -> dict[str, Path]:
    """camera name -> image file of one frame folder; raises naming the folder and the missing cameras."""
    from ftkd.constants import CAMERA_NAMES

    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [name for name in CAMERA_NAMES if name not in files]
    if missing:
        raise ValueError(f"{folder}: missing images for {missing} (expected files named <camera>{IMAGE_SUFFIXES})")
    return {name: files[name] for name in CAMERA_NAMES}


def frame_folders(root: Path) -> list[Path]:
    """The frames under `root`: root itself if it holds camera images, else its sub-folders sorted by name."""
    if not root.is_dir():
        raise ValueError(f"--images {root}: not a folder")
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"--images {root}: no camera images and no frame sub-folders")
    return folders


def frame_pose(poses: dict, name: str, where: str):
    """(ego pose [4, 4], timestamp) of frame `name` from a poses JSON."""
    import numpy as np

    from ftkd.data.geometry import pose_matrix

    if name not in poses:
        raise ValueError(f"{where}: no entry for frame {name!r}")
    entry = poses[name]
    if "ego_pose" in entry:
        matrix = np.asarray(entry["ego_pose"], dtype=np.float64)
    elif "translation" in entry and "rotation" in entry:
        matrix = pose_matrix(entry["translation"], entry["rotation"])
    else:
        raise ValueError(f"{where}: frame {name!r} needs 'ego_pose' (4x4) or 'translation' + 'rotation' (w, x, y, z)")
    if matrix.shape != (4, 4) or "timestamp" not in entry:
        raise ValueError(f"{where}: frame {name!r} needs a 4x4 pose and a 'timestamp' (seconds)")
    return matrix, float(entry["timestamp"])


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ftkd.constants import CLASS_NAMES
    from ftkd.deploy.predict import Calibration, Predictor

    predictor = Predictor(args.model, device=args.device)
    calib = Calibration.load(args.calib)
    poses = json.loads(Path(args.poses).read_text()) if args.poses else None
    state = predictor.start()
    results = []
    for i, folder in enumerate(frame_folders(Path(args.images))):
        if poses is not None:
            ego_pose, timestamp = frame_pose(poses, folder.name, args.poses)
        else:
            ego_pose, timestamp = np.eye(4), i * args.frame_interval
        detections, state = predictor(find_camera_files(folder), calib, ego_pose, timestamp, state)
        results.append(
            {
                "frame": folder.name,
                "timestamp": timestamp,
                "detections": [
                    {"box": [round(v, 4) for v in box], "score": round(score, 5), "label": CLASS_NAMES[label]}
                    for box, score, label in zip(
                        detections.boxes.tolist(), detections.scores.tolist(), detections.labels.tolist()
                    )
                ],
            }
        )
        logger.info(f"{folder.name}: {len(detections.scores)} detections")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"box_layout": "x y z w l h yaw vx vy (ego frame)", "frames": results}, indent=1))
    logger.info(f"wrote {len(results)} frames to {out}")
    return 0
