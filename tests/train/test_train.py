"""Training: configs, a smoke run on tiny generated photos, resume, export, loss decrease."""

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from conftest import write_photos

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kornia") is None or importlib.util.find_spec("omegaconf") is None,
    reason="training needs the [train] extras",
)


@pytest.fixture
def tiny_run(tmp_path):
    photos = write_photos(tmp_path / "photos")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
name: tiny
output_dir: {tmp_path / 'run'}
model: {{backbone: efficientnet_lite0, descriptor_dim: 32}}
loss: {{window: 3d}}
data: {{name: homographic, image_dirs: [{photos}], size: [64, 64], short_side: [80, 120], seed: 0, epoch_size: 8}}
labels: {{adaptation: {{num_homographies: 2}}, resize_max: null, cache_dir: {tmp_path / 'labels'}}}
train: {{batch_size: 2, steps: 4, num_workers: 0, log_every: 2, checkpoint_every: 2}}
""")
    return cfg, tmp_path


def test_table3_configs_switch_exactly_the_three_components():
    from tasp_hloc.train.config import load_config

    seen = set()
    for name in ["base", "ta", "diw", "sw3d", "ta_diw", "ta_sw3d", "diw_sw3d", "ta_diw_sw3d"]:
        conf = load_config(f"table3/{name}", ["data.root=/somewhere"])
        ta, diw, sw = (
            conf.loss.task_aligned,
            conf.loss.importance_weighting,
            conf.loss.window == "3d",
        )
        assert (ta, diw, sw) == ("ta" in name, "diw" in name, "sw3d" in name)
        assert conf.train.lr == 1e-3 and conf.train.batch_size == 4 and conf.loss.lambda_kpt == 1e-3
        seen.add((ta, diw, sw))
    assert len(seen) == 8
    with pytest.raises(ValueError, match="data.root"):
        load_config("paper")
    with pytest.raises(FileNotFoundError, match="table3/base.yaml"):
        load_config("no_such_config")


def test_overrides_reach_into_lists_and_reject_what_does_not_fit():
    from tasp_hloc.train.config import load_config

    conf = load_config(
        "multiview_v1",
        ["data.sources.0.weight=6.0", "train.lr=3e-4", "data.sources.1.homography.scale=[0.4,2.5]"],
    )
    assert conf.data.sources[0].weight == 6.0 and conf.data.sources[0].name == "megadepth"
    assert conf.data.sources[1].homography.scale == [0.4, 2.5]
    assert conf.train.lr == 3e-4 and conf.data.sources[1].name == "homographic"
    # Later overrides win; a mapping merges rather than replaces.
    conf = load_config("multiview_v1", ["train.lr=1e-3", "train.lr=2e-3", "train={steps: 7}"])
    assert conf.train.lr == 2e-3 and conf.train.steps == 7
    with pytest.raises(ValueError, match="data.sources.9.weight=1"):
        load_config("multiview_v1", ["data.sources.9.weight=1"])
    with pytest.raises(ValueError, match="not key=value"):
        load_config("multiview_v1", ["train.lr"])


def test_smoke_training_resume_and_export(tiny_run, tmp_path):
    from tasp_hloc.model.tasp import TaSP
    from tasp_hloc.model.weights import read_manifest
    from tasp_hloc.train.config import load_config
    from tasp_hloc.train.export import export
    from tasp_hloc.train.trainer import Trainer

    cfg, _ = tiny_run
    trainer = Trainer(load_config(str(cfg), ["train.steps=2", "train.keep_every=1"]))
    trainer.fit()
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_step*.pth"))
    assert kept == ["checkpoint_step000001.pth", "checkpoint_step000002.pth"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and all("nan" not in r for r in rows)
    assert (tmp_path / "run" / "curves.png").exists()
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.loss.window == "3d" and saved.train.steps == 2

    # A run started by a version that logged fewer columns: resuming keeps the file's columns.
    metrics = tmp_path / "run" / "metrics.csv"
    table = [line.split(",") for line in metrics.read_text().splitlines()]
    drop = table[0].index("subpx")
    metrics.write_text("".join(",".join(r[:drop] + r[drop + 1 :]) + "\n" for r in table))
    # A new process with more steps resumes at step 2, with the DIW histogram restored.
    hist = trainer.loss_fn.state_dict()["importance.histogram.pdf"].clone()
    resumed = Trainer(load_config(str(cfg)))
    assert resumed.step == 2
    assert torch.equal(resumed.loss_fn.state_dict()["importance.histogram.pdf"], hist)
    resumed.fit()
    rows = [line.split(",") for line in metrics.read_text().splitlines()]
    assert resumed.step == 4 and len(rows) == 3
    assert "subpx" not in rows[0] and {len(r) for r in rows} == {len(table[0]) - 1}
    # The kept checkpoints still hold their own steps after later saves of the last one.
    for step in (1, 2):
        kept = torch.load(tmp_path / "run" / f"checkpoint_step{step:06d}.pth", weights_only=False)
        assert kept["step"] == step
    assert not (tmp_path / "run" / "checkpoint_step000004.pth").exists()

    out = export(tmp_path / "run", "tasp_tiny", weights_dir=tmp_path / "w", fp16=True)
    entry = read_manifest(tmp_path / "w")["weights"]["tasp_tiny"]
    assert entry["backbone"] == "efficientnet_lite0" and entry["descriptor_dim"] == 32
    assert entry["recipe"]["steps"] == 4
    model = TaSP({"weights": str(out), "max_keypoints": 10}).eval()
    with torch.no_grad():
        pred = model({"image": torch.rand(1, 3, 48, 64)})
    assert pred["descriptors"].shape[-1] == 32


def test_interrupted_training_saves_and_resumes(tiny_run, tmp_path, monkeypatch):
    from tasp_hloc.train.config import load_config
    from tasp_hloc.train.trainer import Trainer

    cfg, _ = tiny_run
    trainer = Trainer(load_config(str(cfg)))
    real_step = trainer.train_step

    def dying_step(batch):
        if trainer.step == 3:
            raise KeyboardInterrupt
        return real_step(batch)

    monkeypatch.setattr(trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert Trainer(load_config(str(cfg))).step == 3


def test_loss_goes_down_on_a_fixed_batch(tiny_run):
    from tasp_hloc.data import collate
    from tasp_hloc.train.config import load_config
    from tasp_hloc.train.trainer import Trainer

    cfg, _ = tiny_run
    trainer = Trainer(
        load_config(str(cfg), ["train.lr=3e-3", "train.steps=100", "train.resume=false"])
    )
    batch = collate([trainer.dataset[0], trainer.dataset[1]])
    first = [trainer.train_step(batch)["total"] for _ in range(3)]
    for _ in range(15):
        last = trainer.train_step(batch)["total"]
    assert all(torch.isfinite(torch.tensor(first)))
    assert last < 0.7 * first[0], (first, last)


def test_cpu_bf16_with_depthwise_fp32_trains(tiny_run):
    from tasp_hloc.data import collate
    from tasp_hloc.train.config import load_config
    from tasp_hloc.train.trainer import Trainer

    cfg, _ = tiny_run
    overrides = ["train.lr=3e-3", "train.steps=100", "train.resume=false", "train.device=cpu"]
    trainer = Trainer(load_config(str(cfg), overrides + ["train.cpu_precision=bf16-dw-fp32"]))
    dtypes = {}

    def record(module, inputs, output):
        dtypes["depthwise" if module.groups > 1 else "pointwise"] = output.dtype

    for m in trainer.model.backbone.blocks[-1].modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(record)
    batch = collate([trainer.dataset[0], trainer.dataset[1]])
    first = trainer.train_step(batch)["total"]
    assert dtypes == {"depthwise": torch.float32, "pointwise": torch.bfloat16}
    for _ in range(17):
        last = trainer.train_step(batch)["total"]
    assert last < 0.7 * first, (first, last)
    with pytest.raises(ValueError, match="cpu_precision"):
        Trainer(load_config(str(cfg), overrides + ["train.cpu_precision=fp8"]))


def test_auto_cpu_precision_follows_native_bf16(monkeypatch):
    from tasp_hloc.train import precision

    for native, expected in [(True, "bf16-dw-fp32"), (False, None)]:
        monkeypatch.setattr(precision, "native_bf16", lambda native=native: native)
        assert precision.resolve_cpu_precision("auto") == expected
    assert precision.resolve_cpu_precision(None) is None  # float32 when asked for
    assert precision.resolve_cpu_precision("bf16") == "bf16"


def test_paper_config_trains_on_a_fabricated_megadepth_tree(tmp_path):
    """The Table III configs run as shipped, only pointed at a (tiny, fabricated) MegaDepth tree."""
    from test_data_megadepth import write_megadepth

    from tasp_hloc.train.config import load_config
    from tasp_hloc.train.trainer import Trainer

    root = write_megadepth(tmp_path / "megadepth")
    (root / "train_scenes.txt").write_text("0001\n")
    conf = load_config(
        "table3/ta_diw_sw3d",
        [
            f"data.root={root}",
            "data.size=[64,64]",
            f"output_dir={tmp_path / 'run'}",
            "train.steps=2",
            "train.batch_size=2",
            "train.num_workers=0",
            "labels.adaptation.num_homographies=2",
            f"labels.cache_dir={tmp_path / 'labels'}",
            "model.descriptor_dim=32",
        ],
    )
    trainer = Trainer(conf)
    assert len(trainer.dataset) >= 2
    trainer.fit()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1]
    # Labels were computed once per source image, not per crop.
    assert len(list((tmp_path / "labels").rglob("*.npz"))) <= 4


def test_release_and_ablation_configs_resolve():
    from experiments.ablations import ARMS, GROUPS
    from tasp_hloc.train.config import load_config

    v2 = load_config("local_v2")
    files = v2.data.sources[0].image_dirs
    skimage_dir = importlib.util.find_spec("skimage").submodule_search_locations[0]
    assert any(f.startswith(skimage_dir) and f.endswith("astronaut.png") for f in files)
    assert not any("graf" in f or "leuven" in f or "box" in f for f in files)  # HPatches, demo
    assert load_config("release_v1").model.weights == "tasp_v0"
    for arm, spec in ARMS.items():
        conf = load_config(spec.config, spec.overrides)
        names = [s.name for s in conf.data.sources]
        assert conf.train.batch_size == 4 and "homographic" in names
        assert (conf.model.backbone == "efficientnet_b0") == (arm == "b0_random")
        assert (conf.loss.window == "square") == (arm == "base_loss")
        assert (names == ["homographic"]) == (arm == "homographic_only")
    # issue 20's arms: from tasp_v2, each adds one item to the one before it
    mv = {a: load_config(ARMS[a].config, ARMS[a].overrides) for a in GROUPS["multiview"]}
    for arm, conf in mv.items():
        sfm = conf.data.sources[0]
        assert conf.model.weights == "tasp_v2" and sfm.name == "megadepth"
        assert (sfm.weight == 0) == (arm == "mv_no_sfm")
        assert (sfm.get("scale_range") == [0.5, 2.0]) == ("scale" in arm)
        assert (conf.loss.get("lambda_subpixel", 0) > 0) == arm.endswith("subpx")
    assert ARMS["mv_sfm_scale_softargmax"].trained_as == "mv_sfm_scale"
    assert mv["mv_sfm_scale_softargmax"] == mv["mv_sfm_scale"]
