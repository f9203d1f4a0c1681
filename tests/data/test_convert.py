"""`ftkd convert`: custom logs -> a nuScenes dataset the devkit loads, checked against analytic ego and object
motion, a round trip of a synthetic scene through the custom schema, check-data, and the validation messages."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyquaternion import Quaternion

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME
from ftkd.data.convert import ConvertError, convert, load_log
from ftkd.data.synth.rig import build_rig

T0 = 1_600_000_000_000_000  # us
WIDTH, HEIGHT = 64, 36
EGO_SPEED, EGO_YAW_RATE = 5.0, 0.2  # m/s along global x, rad/s
CAR_START, CAR_VELOCITY, CAR_YAW_RATE = np.array([15.0, 5.0, 0.8]), np.array([3.0, 1.0]), 0.1


def _ego(t: float) -> tuple[np.ndarray, float]:
    """Analytic ego pose at t seconds after T0: translation, yaw."""
    return np.array([EGO_SPEED * t, 0.0, 0.0]), EGO_YAW_RATE * t


def _yaw_quaternion(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _car(t: float) -> tuple[np.ndarray, float]:
    """Analytic car box at t seconds after T0: centre, yaw."""
    return CAR_START + np.array([*CAR_VELOCITY, 0.0]) * t, float(np.arctan2(CAR_VELOCITY[1], CAR_VELOCITY[0])
                                                                  + CAR_YAW_RATE * t)


def _log(folder: Path, name: str, split: str) -> dict:
    """A valid log: 6 real-rig cameras, 4 keyframes at 2 Hz with one sweep between (and one before), ego poses at
    10 Hz, a car with 10 Hz boxes (interpolated), a child with boxes at two keyframes, a barrier."""
    folder.mkdir(parents=True, exist_ok=True)
    rig = build_rig(WIDTH, HEIGHT)
    cameras = {}
    for channel in CAMERA_NAMES:
        sensor = rig[channel]
        pose = {"translation": list(sensor.translation), "rotation": list(sensor.rotation)}
        if channel == "CAM_FRONT":  # the 4x4 matrix form
            pose = sensor.sensor_to_ego.tolist()
        cameras[channel] = {"intrinsic": sensor.intrinsic.tolist(), "width": WIDTH, "height": HEIGHT,
                            "sensor_to_ego": pose}
    frames = []
    for f, t in enumerate(np.arange(-0.25, 1.51, 0.25)):
        keyframe = f % 2 == 1
        images = {}
        for n, channel in enumerate(CAMERA_NAMES):
            path = f"images/{channel}_{f}.jpg"
            if not (folder / path).exists():
                (folder / path).parent.mkdir(exist_ok=True)
                Image.new("RGB", (WIDTH, HEIGHT), (20 * f, 30 * n, 90)).save(folder / path)
            images[channel] = path
        if keyframe:  # CAM_FRONT fires 10 ms after the keyframe time (per-image timestamp)
            images["CAM_FRONT"] = {"file": images["CAM_FRONT"], "timestamp": T0 + round(t * 1e6) + 10_000}
        frames.append({"timestamp": T0 + round(t * 1e6), "keyframe": keyframe, "images": images})
    ego_poses = []
    for t in np.arange(-0.3, 1.81, 0.1):
        translation, yaw = _ego(t)
        ego_poses.append({"timestamp": T0 + round(t * 1e6), "translation": translation.tolist(),
                          "rotation": _yaw_quaternion(yaw)})
    # 10 Hz car boxes 50 ms off the keyframes: every keyframe box is interpolated
    car = {"id": "car_1", "class": "car", "attribute": "vehicle.moving",
           "boxes": [{"timestamp": T0 + round(t * 1e6), "center": _car(t)[0].tolist(), "size": [1.9, 4.5, 1.6],
                      "yaw": _car(t)[1]} for t in np.arange(-0.05, 1.56, 0.1)]}
    child = {"id": "kid", "class": "human.pedestrian.child", "attribute": "pedestrian.standing",
             "boxes": [{"timestamp": T0 + round(t * 1e6), "center": [10.0, -4.0, 0.6], "size": [0.5, 0.5, 1.2],
                        "rotation": _yaw_quaternion(0.3), "visibility": 0.7} for t in (0.5, 1.0)]}
    barrier = {"id": "barrier_1", "class": "barrier",
               "boxes": [{"timestamp": T0 + round(t * 1e6), "center": [12.0, 6.0, 0.5], "size": [2.5, 0.5, 1.0],
                          "yaw": 1.5, "num_lidar_pts": 3} for t in (0.0, 0.5, 1.0, 1.5)]}
    return {"log": name, "location": "test-town", "split": split, "cameras": cameras, "frames": frames,
            "ego_poses": ego_poses, "tracks": [car, child, barrier]}


def _write(folder: Path, log: dict, name: str = "log.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(log))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("custom")
    log_a = _log(folder, "drive_a", "train")
    log_b = _log(folder, "drive_b", "val")
    paths = [_write(folder, log_a, "drive_a.json"), folder / "drive_b.yaml"]
    import yaml

    paths[1].write_text(yaml.safe_dump(log_b))
    return convert(paths, folder / "dataset"), folder, log_a


@pytest.fixture(scope="module")
def nusc(converted):
    from nuscenes import NuScenes

    with contextlib.redirect_stdout(io.StringIO()):
        return NuScenes(version="v1.0-custom", dataroot=str(converted[0]), verbose=False)


def test_devkit_loads_converted_logs(converted, nusc) -> None:
    root, folder, _ = converted
    assert json.loads((root / "v1.0-custom" / "splits.json").read_text()) == {
        "custom_train": ["drive_a"], "custom_val": ["drive_b"]}
    assert [scene["name"] for scene in nusc.scene] == ["drive_a", "drive_b"]
    assert len(nusc.sample) == 8 and all(set(s["data"]) == {*CAMERA_NAMES, LIDAR_NAME} for s in nusc.sample)
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    assert sample["timestamp"] == T0
    # CAM_FRONT chain: the sweep before the first keyframe belongs to the first sample; sweep/keyframe alternate
    record = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    first = nusc.get("sample_data", record["prev"])
    assert not first["is_key_frame"] and first["prev"] == "" and first["sample_token"] == sample["token"]
    assert first["filename"] == f"sweeps/CAM_FRONT/drive_a__CAM_FRONT__{T0 - 250_000}.jpg"
    assert (root / first["filename"]).read_bytes() == (folder / "images/CAM_FRONT_0.jpg").read_bytes()
    chain = [first]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    assert [r["is_key_frame"] for r in chain] == [False, True] * 3 + [False, True]
    assert record["timestamp"] == T0 + 10_000 and record["filename"].startswith("samples/CAM_FRONT/")
    # ego poses interpolated (linear translation, slerp) at each image's timestamp = the analytic motion
    for sd in chain + [nusc.get("sample_data", sample["data"][LIDAR_NAME])]:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        translation, yaw = _ego((sd["timestamp"] - T0) / 1e6)
        np.testing.assert_allclose(pose["translation"], translation, atol=1e-9)
        assert Quaternion(pose["rotation"]).yaw_pitch_roll[0] == pytest.approx(yaw, abs=1e-9)
    calibration = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    rig = build_rig(WIDTH, HEIGHT)["CAM_FRONT"]
    np.testing.assert_allclose(Quaternion(calibration["rotation"]).rotation_matrix, rig.sensor_to_ego[:3, :3],
                               atol=1e-9)
    np.testing.assert_allclose(calibration["camera_intrinsic"], rig.intrinsic)


def test_annotations_follow_the_tracks(nusc) -> None:
    samples = [s for s in nusc.sample if s["scene_token"] == nusc.scene[0]["token"]]
    by_category: dict[str, list[dict]] = {}
    for k, sample in enumerate(samples):
        for token in sample["anns"]:
            ann = nusc.get("sample_annotation", token)
            by_category.setdefault(ann["category_name"], []).append((k, ann))
    cars = by_category["vehicle.car"]
    assert [k for k, _ in cars] == [0, 1, 2, 3]
    for k, ann in cars:  # interpolated from the 10 Hz boxes = the analytic motion; devkit velocity = the true one
        np.testing.assert_allclose(ann["translation"], _car(0.5 * k)[0], atol=1e-6)
        assert Quaternion(ann["rotation"]).yaw_pitch_roll[0] == pytest.approx(_car(0.5 * k)[1], abs=1e-9)
        np.testing.assert_allclose(nusc.box_velocity(ann["token"])[:2], CAR_VELOCITY, atol=1e-6)
        assert nusc.get("attribute", ann["attribute_tokens"][0])["name"] == "vehicle.moving"
        assert ann["num_lidar_pts"] > 0 and ann["size"] == [1.9, 4.5, 1.6]
    kids = by_category["human.pedestrian.child"]
    assert [k for k, _ in kids] == [1, 2]
    assert kids[0][1]["next"] == kids[1][1]["token"] and kids[1][1]["prev"] == kids[0][1]["token"]
    assert kids[0][1]["prev"] == "" and kids[0][1]["visibility_token"] == "3"
    assert Quaternion(kids[0][1]["rotation"]).yaw_pitch_roll[0] == pytest.approx(0.3)
    instance = nusc.get("instance", kids[0][1]["instance_token"])
    assert instance["nbr_annotations"] == 2 and instance["last_annotation_token"] == kids[1][1]["token"]
    barriers = by_category["movable_object.barrier"]
    assert len(barriers) == 4 and barriers[0][1]["attribute_tokens"] == [] and barriers[0][1]["num_lidar_pts"] == 3


def test_check_data_passes_on_converted_dataset(converted, tmp_path: Path) -> None:
    from ftkd.data.check import check_data

    with contextlib.redirect_stdout(io.StringIO()):
        report = check_data(converted[0], "v1.0-custom", "custom_val", out_dir=tmp_path)
    assert report.ok, report.format()
    assert set(report.metrics["present_classes"]) == {"car", "pedestrian", "barrier"}


def test_loader_reads_converted_dataset_with_sweeps_and_future(converted) -> None:
    """The training loader (camera sweeps, past and future frames) on a converted dataset: frame times and the car's
    box in the reference (ego) frame follow from the analytic motion."""
    from ftkd.data.config import DataConfig
    from ftkd.data.loader import build_dataloader

    config = DataConfig(dataroot=str(converted[0]), version="v1.0-custom", train_split="custom_train",
                        val_split="custom_val", num_past_frames=2, num_future_frames=1, test_interval=1,
                        image_size=(32, 64), batch_size=4, num_workers=0)
    batch = next(iter(build_dataloader(config, "custom_train", train=False)))
    assert tuple(batch.images.shape) == (4, 3, 6, 3, 32, 64) and tuple(batch.future_images.shape) == (4, 1, 6, 3,
                                                                                                     32, 64)
    b = 1  # keyframe 1 (t = 0.5 s): past frames at 0.25 s and 0 s, the future frame at 0.75 s
    np.testing.assert_allclose(batch.time_offsets[b].numpy(), [0.0, 0.25, 0.5, -0.25], atol=0.011)
    assert batch.frame_valid[b].all()
    # keyframe 0: the sweep recorded before it is its past frame; nothing is older (padded)
    assert batch.frame_valid[0].tolist() == [True, True, False, True]
    assert float(batch.time_offsets[0, 1]) == pytest.approx(0.25, abs=0.011)
    (x, y, _), yaw = _ego(0.5)
    centre, car_yaw = _car(0.5)
    c, s = np.cos(yaw), np.sin(yaw)
    expected = np.array([[c, s], [-s, c]]) @ (centre[:2] - [x, y])  # global -> ego frame at t = 0.5 s
    car = batch.gt_boxes[b][batch.gt_labels[b] == 0][0].double().numpy()
    np.testing.assert_allclose(car[:2], expected, atol=1e-4)
    assert car[6] == pytest.approx(car_yaw - yaw, abs=1e-5)


def test_synthetic_scene_round_trip(synth_root: Path, tmp_path: Path) -> None:
    """A synthetic scene written in the custom schema (links, first 3 keyframes) converts back to the same tables."""
    from ftkd.engine.evaluation import load_nuscenes

    synth = load_nuscenes(synth_root, "v1.0-synth")
    scene = synth.scene[-1]
    samples = [synth.get("sample", scene["first_sample_token"])]
    while len(samples) < 3:
        samples.append(synth.get("sample", samples[-1]["next"]))
    tokens = [s["token"] for s in samples]
    chains = {}
    for channel in CAMERA_NAMES:
        record, chain = synth.get("sample_data", samples[0]["data"][channel]), []
        while record["sample_token"] in tokens:
            chain.append(record)
            record = synth.get("sample_data", record["next"])
        chains[channel] = chain
    cameras = {}
    for channel in CAMERA_NAMES:
        calibration = synth.get("calibrated_sensor", chains[channel][0]["calibrated_sensor_token"])
        cameras[channel] = {"intrinsic": calibration["camera_intrinsic"], "width": chains[channel][0]["width"],
                            "height": chains[channel][0]["height"],
                            "sensor_to_ego": {k: calibration[k] for k in ("translation", "rotation")}}
    frames, poses = [], {}
    for records in zip(*chains.values()):
        keyframe = records[0]["is_key_frame"]
        stamps = [r["timestamp"] for r in records]
        timestamp = synth.get("sample", records[0]["sample_token"])["timestamp"] if keyframe else min(stamps)
        images = {c: {"file": str(synth_root / r["filename"]), "timestamp": r["timestamp"]}
                  for c, r in zip(chains, records)}
        frames.append({"timestamp": timestamp, "keyframe": keyframe, "images": images})
        for r in records:
            poses[r["timestamp"]] = synth.get("ego_pose", r["ego_pose_token"])
    for sample in samples:
        poses[sample["timestamp"]] = synth.get("ego_pose", synth.get("sample_data", sample["data"][LIDAR_NAME])[
            "ego_pose_token"])
    tracks: dict[str, dict] = {}
    levels = {"1": 0.2, "2": 0.5, "3": 0.7, "4": 0.9}
    for sample in samples:
        for token in sample["anns"]:
            ann = synth.get("sample_annotation", token)
            track = tracks.setdefault(ann["instance_token"], {"id": ann["instance_token"],
                                                             "class": ann["category_name"], "boxes": []})
            box = {"timestamp": sample["timestamp"], "center": ann["translation"], "size": ann["size"],
                   "rotation": ann["rotation"], "num_lidar_pts": ann["num_lidar_pts"],
                   "visibility": levels[ann["visibility_token"]]}
            if ann["attribute_tokens"]:
                box["attribute"] = synth.get("attribute", ann["attribute_tokens"][0])["name"]
            track["boxes"].append(box)
    log = {"log": scene["name"], "split": "val", "cameras": cameras, "frames": frames,
           "ego_poses": [{"timestamp": t, "translation": p["translation"], "rotation": p["rotation"]}
                         for t, p in sorted(poses.items())], "tracks": list(tracks.values())}
    root = convert([_write(tmp_path, log)], tmp_path / "dataset", version="v1.0-round", images="link")
    converted = load_nuscenes(root, "v1.0-round")
    assert len(converted.sample) == 3 and len(converted.sample_annotation) == sum(len(s["anns"]) for s in samples)
    for original, sample in zip(samples, converted.sample):
        assert sample["timestamp"] == original["timestamp"]
        for channel in (*CAMERA_NAMES, LIDAR_NAME):
            a = synth.get("sample_data", original["data"][channel])
            b = converted.get("sample_data", sample["data"][channel])
            assert (a["timestamp"], a["filename"].split("/")[:2]) == (b["timestamp"], b["filename"].split("/")[:2])
            if channel != LIDAR_NAME:
                assert (root / b["filename"]).resolve() == (synth_root / a["filename"]).resolve()
            pose_a, pose_b = synth.get("ego_pose", a["ego_pose_token"]), converted.get("ego_pose", b["ego_pose_token"])
            np.testing.assert_allclose(pose_b["translation"], pose_a["translation"], atol=1e-9)
            assert abs(np.dot(pose_b["rotation"], pose_a["rotation"])) == pytest.approx(1.0, abs=1e-12)
        originals = sorted((synth.get("sample_annotation", t) for t in original["anns"]),
                           key=lambda a: a["instance_token"])
        ours = sorted((converted.get("sample_annotation", t) for t in sample["anns"]),
                      key=lambda a: a["category_name"] + json.dumps(a["translation"]))
        originals.sort(key=lambda a: a["category_name"] + json.dumps(a["translation"]))
        for a, b in zip(originals, ours):
            assert (a["category_name"], a["size"], a["num_lidar_pts"], a["visibility_token"]) == (
                b["category_name"], b["size"], b["num_lidar_pts"], b["visibility_token"])
            np.testing.assert_allclose(b["translation"], a["translation"], atol=1e-9)
            assert abs(np.dot(b["rotation"], a["rotation"])) == pytest.approx(1.0, abs=1e-9)
            assert [synth.get("attribute", t)["name"] for t in a["attribute_tokens"]] == [
                converted.get("attribute", t)["name"] for t in b["attribute_tokens"]]


def _set(path: tuple, value: object):
    def mutate(log: dict) -> None:
        target = log
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path: tuple):
    def mutate(log: dict) -> None:
        target = log
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _frame_timestamp_repeated(log: dict) -> None:
    log["frames"][3]["timestamp"] = log["frames"][2]["timestamp"]


def _poses_too_late(log: dict) -> None:
    log["ego_poses"] = log["ego_poses"][3:]


def _ego_box_after_the_poses(log: dict) -> None:
    log["box_frame"] = "ego"
    log["tracks"][0]["boxes"][-1]["timestamp"] = T0 + 1_900_000


def _unknown_camera(log: dict) -> None:
    log["cameras"]["CAM_TOP"] = log["cameras"]["CAM_BACK"]


# mutation of a valid log -> words the error must contain: the record/field path and what was expected
INVALID = {
    "unknown camera": (_unknown_camera, ["cameras.CAM_TOP", "unknown camera name", "CAM_FRONT_LEFT"]),
    "non-unit quaternion": (_set(("cameras", "CAM_BACK", "sensor_to_ego", "rotation"), [1, 0, 0, 0.5]),
                            ["cameras.CAM_BACK.sensor_to_ego.rotation", "unit quaternion [w, x, y, z]"]),
    "non-rigid matrix": (_set(("cameras", "CAM_FRONT", "sensor_to_ego"), np.diag([2.0, 1, 1, 1]).tolist()),
                         ["cameras.CAM_FRONT.sensor_to_ego", "rigid 4x4"]),
    "typo in a key": (_set(("cameras", "CAM_FRONT", "intrinsics"), [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                      ["cameras.CAM_FRONT", "unknown key(s) ['intrinsics']"]),
    "bad intrinsic": (_set(("cameras", "CAM_BACK", "intrinsic"), [[0, 0, 5], [0, 10, 5], [0, 0, 1]]),
                      ["cameras.CAM_BACK.intrinsic", "fx, fy > 0"]),
    "missing image": (_set(("frames", 2, "images", "CAM_BACK"), "images/nowhere.jpg"),
                      ["frames[2].images.CAM_BACK", "nowhere.jpg does not exist"]),
    "wrong image size": (_set(("cameras", "CAM_BACK", "width"), 80),
                         ["frames[0].images.CAM_BACK", "is 64x36, cameras.CAM_BACK says 80x36"]),
    "non-increasing frame timestamps": (_frame_timestamp_repeated, ["frames[3].timestamp", "must increase"]),
    "keyframe without all cameras": (_delete(("frames", 1, "images", "CAM_BACK_LEFT")),
                                     ["frames[1].images", "every camera", "CAM_BACK_LEFT"]),
    "image outside the ego poses": (_poses_too_late, ["frames[0].timestamp", "outside the ego poses"]),
    "unknown class": (_set(("tracks", 0, "class"), "spaceship"), ["tracks[0].class", "unknown class name 'spaceship'"]),
    "size not positive": (_set(("tracks", 1, "boxes", 0, "size"), [0.5, -1.0, 1.2]),
                          ["tracks[1].boxes[0].size", "positive size [w, l, h]"]),
    "attribute of another class": (_set(("tracks", 0, "attribute"), "pedestrian.moving"),
                                   ["tracks[0].attribute", "vehicle.parked"]),
    "attribute of a barrier box": (_set(("tracks", 2, "boxes", 1, "attribute"), "vehicle.moving"),
                                   ["tracks[2].boxes[1].attribute", "carries no attribute"]),
    "camera not declared": (_set(("frames", 4, "images", "CAM_TOP"), "images/CAM_BACK_4.jpg"),
                            ["frames[4].images.CAM_TOP", "not among the cameras"]),
    "box timestamps not increasing": (_set(("tracks", 2, "boxes", 1, "timestamp"), T0),
                                      ["tracks[2].boxes[1].timestamp", "must increase"]),
    "yaw and rotation": (_set(("tracks", 2, "boxes", 0, "rotation"), [1, 0, 0, 0]),
                         ["tracks[2].boxes[0]", "exactly one of yaw"]),
    "no split": (_delete(("split",)), ["split", "--split"]),
    "time unit": (_set(("time_unit",), "hours"), ["time_unit", "['ms', 's', 'us']"]),
    "box frame": (_set(("box_frame",), "lidar"), ["box_frame", "'global' or 'ego'"]),
    "ego-frame box outside the ego poses": (_ego_box_after_the_poses,
                                            ["tracks[0].boxes[16].timestamp", "outside the ego poses"]),
}


@pytest.fixture(scope="module")
def valid_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("invalid")
    return folder, _log(folder, "drive_x", "train")


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validation_errors_name_file_record_and_field(valid_log, case: str) -> None:
    folder, log = valid_log
    log = copy.deepcopy(log)
    mutate, words = INVALID[case]
    mutate(log)
    path = _write(folder, log, f"{case.replace(' ', '_')}.json")
    with pytest.raises(ConvertError) as info:
        load_log(path)
    message = str(info.value)
    assert f"{path}: " in message
    for word in words:
        assert word in message, message


def test_boxes_in_the_ego_frame(valid_log) -> None:
    """box_frame: ego moves each box by the (interpolated) ego pose at its own timestamp = the global boxes."""
    folder, log = valid_log
    reference = load_log(_write(folder, log, "global.json"))
    ego_log = copy.deepcopy(log)
    ego_log["box_frame"] = "ego"
    for track in ego_log["tracks"]:
        for box in track["boxes"]:
            (x, y, _), yaw = _ego((box["timestamp"] - T0) / 1e6)
            c, s = np.cos(yaw), np.sin(yaw)
            dx, dy = box["center"][0] - x, box["center"][1] - y
            box["center"] = [c * dx + s * dy, -s * dx + c * dy, box["center"][2]]  # global -> ego (analytic pose)
            if "yaw" in box:
                box["yaw"] -= yaw
            else:
                box["rotation"] = _yaw_quaternion(Quaternion(box["rotation"]).yaw_pitch_roll[0] - yaw)
    converted = load_log(_write(folder, ego_log, "ego.json"))
    assert len(converted.tracks) == 3
    for track, expected in zip(converted.tracks, reference.tracks):
        assert len(track.boxes) == len(expected.boxes)
        for box, truth in zip(track.boxes, expected.boxes):
            np.testing.assert_allclose(box.center, truth.center, atol=1e-9)
            assert abs(np.dot(box.rotation, truth.rotation)) == pytest.approx(1.0, abs=1e-12)


def test_convert_rejects_clashes_and_writes_atomically(valid_log, tmp_path: Path, monkeypatch) -> None:
    folder, log = valid_log
    first = _write(folder, log, "first.json")
    second = _write(folder, log, "second.json")
    with pytest.raises(ConvertError, match="'drive_x' is already used by .*first.json"):
        convert([first, second], tmp_path / "out")
    with pytest.raises(ConvertError, match="reserves"):
        convert([first], tmp_path / "out", version="v1.0-mini")  # mini_train is the devkit's split
    from ftkd.data import convert as module

    calls = []

    def failing_place(source, target, images):
        calls.append(target)
        if len(calls) == 5:
            raise OSError("disk full")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")

    monkeypatch.setattr(module, "_place", failing_place)
    with pytest.raises(OSError, match="disk full"):
        convert([first], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert([first], tmp_path / "out")


def test_cli_convert(valid_log, tmp_path: Path) -> None:
    from ftkd.cli import main

    folder, log = valid_log
    path = _write(folder, {k: v for k, v in log.items() if k != "split"}, "cli.json")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(path), "--out", str(tmp_path / "data"), "--split", "val", "--link"])
    assert exit_info.value.code == 0
    assert json.loads((tmp_path / "data/v1.0-custom/splits.json").read_text()) == {"custom_val": ["drive_x"]}
    assert (tmp_path / "data/samples/CAM_BACK").iterdir().__next__().is_symlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(path), "--out", str(tmp_path / "bad")])  # no split anywhere
    assert exit_info.value.code == 1 and not (tmp_path / "bad").exists()


def test_documented_example_converts(tmp_path: Path) -> None:
    """The complete example of docs/custom_data.md is valid: it converts and the devkit loads it."""
    import yaml

    text = (Path(__file__).parents[2] / "docs" / "custom_data.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    for frame in example["frames"]:
        for channel, image in frame["images"].items():
            path = tmp_path / (image["file"] if isinstance(image, dict) else image)
            path.parent.mkdir(exist_ok=True)
            camera = example["cameras"][channel]
            Image.new("RGB", (camera["width"], camera["height"])).save(path)
    path = tmp_path / "drive_0001.yaml"
    path.write_text(yaml.safe_dump(example))
    root = convert([path], tmp_path / "dataset")
    from ftkd.engine.evaluation import load_nuscenes

    nusc = load_nuscenes(root, "v1.0-custom")
    assert len(nusc.sample) == 2 and len(nusc.sample_annotation) == 3  # the child's span covers keyframe 2 only
    assert {ann["category_name"] for ann in nusc.sample_annotation} == {"vehicle.car", "human.pedestrian.child"}
