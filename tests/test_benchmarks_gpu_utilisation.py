"""benchmarks/gpu_utilisation.py: dmon samples are labelled by the runs active on their GPU and summarised."""

import calendar
import json

import pytest


@pytest.fixture(scope="module")
def gpu_utilisation(load_benchmark):
    return load_benchmark("gpu_utilisation")


DMON = """#Time         gpu     sm    mem    enc    dec    jpg    ofa     fb   bar1   ccpm
#HH:MM:SS     Idx      %      %      %      %      %      %     MB     MB     MB
 23:59:50       0      5      0      0      0      0      0      0      1      0
 23:59:50       1      0      0      0      0      0      0      0      1      0
 00:00:05       0     90      0      0      0      0      0  40000      1      0
 00:00:05       1     30      0      0      0      0      0   4000      1      0
 00:00:20       0    100      0      0      0      0      0  42000      1      0
 00:00:20       1     20      0      0      0      0      0   4000      1      0
"""


def test_samples_are_grouped_by_the_runs_on_their_gpu_across_midnight(gpu_utilisation, tmp_path):
    midnight = calendar.timegm((2026, 11, 28, 0, 0, 0))
    lanes = {"environment": {"device": "GPU", "commit": "abc"}, "items": [
        {"stage": "teacher", "seed": 0, "lane": "gpu0.0", "started": midnight, "seconds": 100.0},
        {"stage": "sparsebev", "seed": 0, "lane": "gpu0.1", "started": midnight + 1, "seconds": 100.0},
        {"stage": "streampetr", "seed": 0, "lane": "gpu1.0", "started": midnight, "seconds": 100.0},
        {"stage": "ftkd_sparsebev", "seed": 0, "lane": "", "started": None, "seconds": None},  # never started
    ]}
    summary = gpu_utilisation.utilisation(DMON, lanes)
    # 23:59:50 is the day before the runs (the log crosses midnight): both GPUs idle then
    assert summary["idle"]["samples"] == 2 and summary["idle"]["sm_percent_median"] == 2.5
    both = summary["2 SparseBEV-family"]  # 00:00:05 and 00:00:20 on GPU 0 (sparsebev starts at 00:00:01)
    assert both["samples"] == 2 and both["sm_percent_median"] == 95.0 and both["memory_mib_median"] == 41000.0
    assert summary["1 StreamPETR"]["samples"] == 2 and summary["1 StreamPETR"]["sm_percent_median"] == 25.0
    out = tmp_path / "util.json"
    (tmp_path / "dmon.log").write_text(DMON)
    (tmp_path / "lanes.json").write_text(json.dumps(lanes))
    assert gpu_utilisation.main(["--dmon", str(tmp_path / "dmon.log"), "--lanes", str(tmp_path / "lanes.json"),
                                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["device"] == "GPU" and written["by_runs_on_the_gpu"] == summary
    # a SOLO item recorded by a second lanes.py (lanes_solo.json) labels its GPU's samples like any other run
    main_items = [i for i in lanes["items"] if i["lane"] != "gpu1.0"]
    (tmp_path / "lanes.json").write_text(json.dumps({**lanes, "items": main_items}))
    solo_items = [i for i in lanes["items"] if i["lane"] == "gpu1.0"]
    (tmp_path / "lanes_solo.json").write_text(json.dumps({"items": solo_items}))
    assert gpu_utilisation.main(["--dmon", str(tmp_path / "dmon.log"), "--lanes", str(tmp_path / "lanes.json"),
                                 str(tmp_path / "lanes_solo.json"), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["device"] == "GPU" and written["by_runs_on_the_gpu"] == summary
    # a run over two GPUs (a lane of lanes.py --gpus-per-lane 2) labels the samples of both
    ddp = [{"stage": "streampetr", "seed": 0, "lane": "gpu0+1.0", "started": midnight, "seconds": 100.0}]
    summary = gpu_utilisation.utilisation(DMON, {"items": ddp})
    assert summary["1 StreamPETR"]["samples"] == 4 and summary["idle"]["samples"] == 2
    with pytest.raises(ValueError, match="no item with a start time"):
        gpu_utilisation.utilisation(DMON, {"items": []})
