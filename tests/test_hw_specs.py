"""Built-in hardware and link specs: they load, their numbers match published figures by id,
dense and with-sparsity peaks are never mixed up, and malformed user files fail loudly.

The published records live in hw_specs/references.json (the cited records of the project's
reference set), so every check here runs in a plain clone."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from perfscope.errors import SpecError, UnsupportedDtypeError
from perfscope.specs.hardware import GB, GIB, MIB, TERA, HardwareSpec, LinkSpec
from perfscope.specs.loading import load_hw, load_link

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "hw_specs"
GPU_FILES = sorted((SPECS / "gpus").glob("*.toml"))
LINK_FILES = sorted((SPECS / "links").glob("*.toml"))
REFERENCES = SPECS / "references.json"  # the cited records, kept in the repository
# the project's whole reference set, beside the checkout (main/, or a worktree in wt/)
SHARED_REFERENCE = next((d / "shared" / "reference" / "published-figures.json" for d in
                         (ROOT.parent, ROOT.parent.parent) if (d / "shared").is_dir()),
                        ROOT.parent / "shared" / "reference" / "published-figures.json")

EXPECTED_GPUS = {
    "v100-sxm2-16gb",
    "v100-sxm2-32gb",
    "v100-pcie-16gb",
    "a100-sxm-40gb",
    "a100-sxm-80gb",
    "a100-pcie-80gb",
    "h100-sxm",
    "h100-pcie",
    "h100-nvl",
    "h200-sxm",
    "h200-nvl",
    "l40s",
    "b200",
    "mi300x",
}
EXPECTED_LINKS = {
    "pcie3-x16",
    "pcie4-x16",
    "pcie5-x16",
    "nvlink2",
    "nvlink3",
    "nvlink4",
    "nvlink5",
    "ib-hdr",
    "ib-ndr",
}


def gpu(name: str) -> HardwareSpec:
    return load_hw(name)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def ref() -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(REFERENCES.read_text())["records"]}


def ref_value(record: dict) -> float:
    """The record's value in SI units (FLOP/s, OP/s or bytes/s)."""
    scale = {"TFLOPS": TERA, "TOPS": TERA, "PFLOPS": 1e15, "GB/s": GB, "TB/s": 1e12}
    return float(record["value"]) * scale[record["unit"]]


# ---- every built-in file loads -------------------------------------------------------------


def test_all_expected_files_exist():
    assert {p.stem for p in GPU_FILES} >= EXPECTED_GPUS
    assert {p.stem for p in LINK_FILES} >= EXPECTED_LINKS
    kinds = {load_link(str(p)).kind for p in LINK_FILES}
    assert "infinity_fabric" in kinds


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_gpu_file_loads_by_name_and_path(path: Path):
    by_name = load_hw(path.stem)
    by_path = load_hw(str(path))
    assert by_name.name == by_path.name == path.stem
    assert by_name.memory_bytes > 0 and by_name.memory_bandwidth_bytes_s > 0
    assert by_name.sm_count > 0 and by_name.l2_bytes > 0
    assert by_name.gpu_link is not None  # every device reaches its peers somehow
    assert "fp32" in by_name.dtypes()


@pytest.mark.parametrize("path", LINK_FILES, ids=lambda p: p.stem)
def test_link_file_loads_by_name_and_path(path: Path):
    link = load_link(path.stem)
    by_path = load_link(str(path))
    assert link.name == path.stem
    assert dataclasses.replace(link, file="") == dataclasses.replace(by_path, file="")
    assert link.bandwidth_bytes_s > 0 and link.latency_class in ("nvlink", "pci", "net")


# ---- dense vs sparse ------------------------------------------------------------------------


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_sparse_is_twice_dense(path: Path):
    hw = load_hw(str(path))
    pairs = [
        (p.dtype, p.tensor_dense, p.tensor_sparse)
        for p in hw.peaks.values()
        if p.tensor_dense and p.tensor_sparse
    ]
    for dtype, dense, sparse in pairs:
        assert rel(sparse, 2 * dense) < 0.01, f"{hw.name} {dtype}: {sparse} vs 2 x {dense}"


# (device, dtype) -> ids of published WITH-SPARSITY figures (some labelled dense by mistake)
SPARSE_FIGURES = {
    ("a100-sxm-40gb", "tf32"): ["DS-009"],
    ("a100-sxm-40gb", "fp16"): ["DS-010"],
    ("a100-sxm-40gb", "bf16"): ["DS-011"],
    ("a100-sxm-40gb", "int8"): ["DS-012"],
    ("a100-sxm-40gb", "int4"): ["DS-013"],
    ("a100-sxm-80gb", "bf16"): ["DS-011"],
    ("a100-sxm-80gb", "fp16"): ["DS-010"],
    ("h100-sxm", "tf32"): ["DS-025", "DS-110"],
    ("h100-sxm", "bf16"): ["DS-026"],
    ("h100-sxm", "fp16"): ["DS-026"],
    ("h100-sxm", "fp8"): ["DS-027"],
    ("h200-sxm", "bf16"): ["DS-106", "DS-107"],
    ("h200-sxm", "fp16"): ["DS-107"],
}


@pytest.mark.parametrize(("device", "dtype"), sorted(SPARSE_FIGURES))
def test_dense_never_equals_a_published_sparse_figure(ref, device, dtype):
    dense = gpu(device).peaks[dtype].tensor_dense
    assert dense is not None
    for rid in SPARSE_FIGURES[(device, dtype)]:
        sparse = ref_value(ref[rid])
        assert rel(dense, sparse) > 0.4, f"{device} {dtype} dense {dense:.4g} is {rid}'s sparse"
        assert rel(2 * dense, sparse) < 0.02  # ... and it is half of it


def test_headline_dense_figures():
    assert gpu("h100-sxm").tensor_flops("bf16") == (989.4 * TERA, "spec")
    assert gpu("h100").tensor_flops("bf16")[0] == pytest.approx(989.4e12)
    assert gpu("a100").tensor_flops("bf16")[0] == pytest.approx(312e12)
    assert gpu("h100-pcie").tensor_flops("bf16")[0] == pytest.approx(756e12)
    assert gpu("h100-nvl").tensor_flops("bf16")[0] == pytest.approx(835.5e12)
    assert gpu("h200-nvl").tensor_flops("bf16")[0] == pytest.approx(835.5e12)
    assert gpu("h200").tensor_flops("bf16")[0] == pytest.approx(989.4e12)
    assert gpu("b200").tensor_flops("bf16")[0] == pytest.approx(2250e12)
    assert gpu("mi300x").tensor_flops("bf16")[0] == pytest.approx(1307.4e12)
    assert gpu("v100-sxm2-16gb").tensor_flops("fp16")[0] == pytest.approx(125e12)
    assert gpu("v100-pcie-16gb").tensor_flops("fp16")[0] == pytest.approx(112e12)
    assert gpu("v100-pcie-16gb").tensor_flops("fp32")[0] == pytest.approx(14e12)
    assert gpu("v100-sxm2-32gb").tensor_flops("fp32")[0] == pytest.approx(15.7e12)
    assert gpu("a100-sxm-40gb").peaks["int4"].tensor_dense == pytest.approx(1248e12)


# ---- absent dtypes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        ("v100-sxm2-16gb", "fp8"),
        ("v100-sxm2-32gb", "fp8"),
        ("v100-pcie-16gb", "fp8"),
        ("v100-sxm2-16gb", "bf16"),
        ("v100-sxm2-32gb", "bf16"),
        ("v100-pcie-16gb", "bf16"),
        ("v100-sxm2-32gb", "tf32"),
        ("v100-sxm2-32gb", "int8"),
        ("a100-sxm-40gb", "fp8"),
        ("a100-sxm-80gb", "fp8"),
        ("a100-pcie-80gb", "fp8"),
        ("h100-sxm", "int4"),
        ("h100-pcie", "int4"),
        ("h100-nvl", "int4"),
        ("h200-sxm", "int4"),
        ("h200-nvl", "int4"),
        ("b200", "int4"),
        ("mi300x", "int4"),
        ("l40s", "fp64"),
    ],
)
def test_missing_dtype_raises(device, dtype):
    hw = gpu(device)
    assert not hw.has_dtype(dtype)
    with pytest.raises(UnsupportedDtypeError, match=dtype):
        hw.tensor_flops(dtype)
    with pytest.raises(UnsupportedDtypeError):
        hw.tensor_flops(dtype, ceiling="empirical")


def test_present_low_precision_dtypes():
    assert gpu("l40s").has_dtype("int4") and gpu("l40s").has_dtype("fp8")
    assert gpu("a100").has_dtype("int4")
    for name in ("h100-sxm", "h200-sxm", "b200", "mi300x", "l40s"):
        assert gpu(name).has_dtype("fp8"), name


# ---- cross-checks against the reference file, by id -----------------------------------------


def _bf16_dense(name):
    return gpu(name).peaks["bf16"].tensor_dense


PEAK_CHECKS = [  # (record id, device, getter)
    ("DS-032", "h100-sxm", _bf16_dense),
    ("DS-042", "h100-pcie", _bf16_dense),
    ("DS-047", "l40s", _bf16_dense),
    ("DS-052", "b200", _bf16_dense),
    ("DS-057", "mi300x", _bf16_dense),
    ("DS-062", "a100-sxm-80gb", _bf16_dense),
    ("DS-007", "a100-sxm-40gb", _bf16_dense),
    ("DS-037", "h200-sxm", _bf16_dense),
    ("DS-033", "h100-sxm", lambda n: gpu(n).peaks["fp8"].tensor_dense),
    ("DS-053", "b200", lambda n: gpu(n).peaks["fp8"].tensor_dense),
    ("DS-058", "mi300x", lambda n: gpu(n).peaks["fp8"].tensor_dense),
    ("DS-061", "a100-sxm-80gb", lambda n: gpu(n).peaks["tf32"].tensor_dense),
    ("DS-014", "a100-sxm-40gb", lambda n: gpu(n).peaks["int4"].tensor_dense),
    ("DS-002", "a100-sxm-40gb", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-016", "a100-sxm-80gb", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-075", "a100-pcie-80gb", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-021", "h100-sxm", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-069", "h100-pcie", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-082", "h100-nvl", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-071", "h200-sxm", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-077", "l40s", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-081", "mi300x", lambda n: gpu(n).memory_bandwidth_bytes_s),
    ("DS-088", "v100-sxm2-16gb", lambda n: gpu(n).memory_bandwidth_bytes_s),
]


@pytest.mark.parametrize(("rid", "device", "get"), PEAK_CHECKS, ids=[c[0] for c in PEAK_CHECKS])
def test_spec_matches_reference_record(ref, rid, device, get):
    assert rel(get(device), ref_value(ref[rid])) < 0.011, f"{device} vs {rid}"


LINK_CHECKS = [
    ("DS-093", "nvlink2"),
    ("DS-095", "nvlink3"),
    ("DS-097", "nvlink4"),
    ("DS-099", "nvlink5"),
    ("DS-102", "pcie3-x16"),
    ("DS-103", "pcie4-x16"),
    ("DS-104", "pcie5-x16"),
]


@pytest.mark.parametrize(("rid", "link"), LINK_CHECKS, ids=[c[0] for c in LINK_CHECKS])
def test_link_matches_reference_record(ref, rid, link):
    assert rel(load_link(link).bandwidth_bytes_s, ref_value(ref[rid])) < 0.01


EMPIRICAL_CHECKS = [
    ("MB-003", lambda: gpu("h100-sxm").empirical.gemm_flops["bf16"]),
    ("MB-007", lambda: gpu("h100-sxm").empirical.gemm_flops["fp8"]),
    ("MB-008", lambda: gpu("h200-sxm").empirical.gemm_flops["fp8"]),
    ("MB-001", lambda: gpu("a100-sxm-80gb").empirical.gemm_flops["bf16"]),
    ("MB-002", lambda: gpu("a100-pcie-80gb").empirical.gemm_flops["bf16"]),
    ("MB-005", lambda: gpu("b200").empirical.gemm_flops["bf16"]),
    ("MB-010", lambda: gpu("b200").empirical.gemm_flops["fp8"]),
    ("MB-006", lambda: gpu("mi300x").empirical.gemm_flops["bf16"]),
    ("MB-021", lambda: gpu("h100-pcie").empirical.memory_bandwidth_bytes_s),
    ("MB-015", lambda: gpu("a100-sxm-40gb").empirical.memory_bandwidth_bytes_s),
    ("MB-012", lambda: gpu("v100-pcie-16gb").empirical.memory_bandwidth_bytes_s),
    ("MB-044", lambda: load_link("nvlink3").empirical_busbw_bytes_s),
    ("MB-051", lambda: load_link("nvlink4").empirical_busbw_bytes_s),
]


@pytest.mark.parametrize(("rid", "get"), EMPIRICAL_CHECKS, ids=[c[0] for c in EMPIRICAL_CHECKS])
def test_empirical_matches_reference_record(ref, rid, get):
    assert rel(get(), ref_value(ref[rid])) < 0.005


def test_power_limited_gpt_fast_bandwidth_not_used_as_stock_a100(ref):
    # MB-033 (~1700 GB/s) was measured on an A100 80GB power-limited to 330 W
    emp = gpu("a100-sxm-80gb").empirical
    assert emp is not None and emp.memory_bandwidth_bytes_s is not None
    assert "MB-033" not in (emp.memory_source or "")
    assert emp.memory_bandwidth_bytes_s != ref_value(ref["MB-033"])


def test_capacities_are_what_the_driver_exposes():
    # nominal (vendor) capacities are binary-sized HBM stacks
    assert gpu("a100-sxm-40gb").memory_nominal_bytes == 40 * GIB
    assert gpu("h100-sxm").memory_nominal_bytes == 80 * GIB
    assert gpu("h100-nvl").memory_nominal_bytes == 94 * GIB
    # what nvidia-smi / rocm-smi show as total (each figure copied from a public log here, not
    # from the spec): an 80 GB H100 is 79.6 GiB to the driver, and the fit checks use that
    for name, reported_mib in [
        ("h100-sxm", 81559),
        ("h100-pcie", 81559),
        ("h200-sxm", 143771),
        ("h200-nvl", 143771),
        ("b200", 183359),
        ("h100-nvl", 95830),
        ("a100-sxm-80gb", 81920),
        ("a100-sxm-40gb", 40960),
        ("v100-sxm2-32gb", 32510),
        ("mi300x", 205822885888 / MIB),
        ("l40s", 46068),  # ECC on: 48 GiB x 15/16
    ]:
        hw = gpu(name)
        assert hw.memory_bytes == reported_mib * MIB, name
        assert hw.memory_bytes <= hw.memory_nominal_bytes and hw.memory_driver_source
    assert gpu("h100-sxm").memory_bytes / GIB == pytest.approx(79.65, abs=0.01)


def test_every_builtin_device_states_its_driver_capacity():
    for path in GPU_FILES:
        assert load_hw(str(path)).memory_driver_source, path.stem


def test_chip_figures():
    assert gpu("h100-pcie").sm_count == 114
    assert gpu("mi300x").sm_count == 304
    assert gpu("mi300x").l2_bytes == 32 * MIB  # 4 MiB per XCD x 8, not the 256 MB Infinity Cache
    assert gpu("b200").sm_count == 148


# ---- sources, empirical <= peak, aliases ----------------------------------------------------


def _sources(node, where=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("source", "latency_source"):
                yield f"{where}.{k}", v
            else:
                yield from _sources(v, f"{where}.{k}")


@pytest.mark.parametrize("path", GPU_FILES + LINK_FILES, ids=lambda p: p.stem)
def test_every_source_string_is_filled(path: Path):
    data = tomllib.loads(path.read_text())
    found = dict(_sources(data))
    top = ".source" if path.parent.name == "links" else ".memory.source"
    assert top in found
    for key, value in found.items():
        assert isinstance(value, str) and len(value.strip()) > 10, f"{path.name}{key}"
        assert "PLACEHOLDER" not in value.upper(), f"{path.name}{key}"
    if path.parent.name == "gpus":
        assert ".memory.source" in found and ".chip.source" in found
        assert data["chip"].get("architecture"), f"{path.name}: derived ceilings need it"


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_empirical_at_most_peak(path: Path):
    hw = load_hw(str(path))
    if hw.empirical is None:
        return
    if hw.empirical.memory_bandwidth_bytes_s is not None:
        assert hw.empirical.memory_bandwidth_bytes_s <= hw.memory_bandwidth_bytes_s
        assert hw.empirical.memory_source
        assert hw.memory_bandwidth("empirical")[1] == "measured"
    for dtype, achieved in hw.empirical.gemm_flops.items():
        peak, kind = hw.tensor_flops(dtype)
        assert kind == "spec" and 0 < achieved <= peak, f"{hw.name} {dtype}"
        assert hw.tensor_flops(dtype, ceiling="empirical") == (achieved, "measured")
        assert hw.empirical.gemm_sources[dtype]


@pytest.mark.parametrize("path", LINK_FILES, ids=lambda p: p.stem)
def test_link_busbw_at_most_wire_rate(path: Path):
    link: LinkSpec = load_link(str(path))
    if link.empirical_busbw_bytes_s is not None:
        # ring busbw cannot exceed the per-direction rate (NVLS figures can, so they are not used)
        assert link.empirical_busbw_bytes_s <= link.bandwidth_bytes_s
        assert link.empirical_source
        assert 0.5 < link.measured_efficiency <= 1.0


def test_aliases_unique_across_files():
    owner: dict[str, str] = {}
    stems = {p.stem for p in GPU_FILES}
    for path in GPU_FILES:
        hw = load_hw(str(path))
        for alias in hw.aliases:
            key = alias.lower().replace("_", "-").replace(" ", "-")
            assert key not in owner, f"alias {alias!r} in {path.stem} and {owner.get(key)}"
            assert key not in stems, f"alias {alias!r} of {path.stem} is another file's name"
            owner[key] = path.stem
            assert load_hw(alias).name == path.stem
    assert owner["a100"] == "a100-sxm-80gb"
    assert owner["h100"] == "h100-sxm"
    assert owner["h200"] == "h200-sxm"
    assert owner["v100"] == "v100-sxm2-32gb"


def test_links_wired_as_expected():
    assert gpu("h100-sxm").gpu_link.name == "nvlink4"
    assert gpu("a100").gpu_link.name == "nvlink3"
    assert gpu("b200").gpu_link.name == "nvlink5"
    assert gpu("v100").gpu_link.name == "nvlink2"
    assert gpu("mi300x").gpu_link.kind == "infinity_fabric"
    assert gpu("l40s").gpu_link.name == "pcie4-x16"  # no NVLink: falls back to the host link
    assert gpu("v100-pcie-16gb").gpu_link.name == "pcie3-x16"
    assert gpu("h100-sxm").network_link.name == "ib-ndr"


# ---- user files and malformed files ---------------------------------------------------------


def test_user_file_by_path_loads_like_builtin(tmp_path: Path):
    user = tmp_path / "my-h100.toml"
    shutil.copy(SPECS / "gpus" / "h100-sxm.toml", user)
    mine, builtin = load_hw(str(user)), load_hw("h100-sxm")
    assert mine.file == str(user)
    assert dataclasses.replace(mine, file="") == dataclasses.replace(builtin, file="")
    assert mine.tensor_flops("bf16") == builtin.tensor_flops("bf16")
    assert mine.gpu_link == builtin.gpu_link


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (SPECS / "gpus" / "h100-sxm.toml").read_text()
    assert old in text
    path = tmp_path / "variant.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_unknown_key_names_the_key(tmp_path: Path):
    path = _write_variant(
        tmp_path, "bandwidth_gb_s = 3350", "bandwidth_gb_s = 3350\nbandwith_gb_s = 3350"
    )
    with pytest.raises(SpecError) as err:
        load_hw(str(path))
    assert "memory.bandwith_gb_s" in str(err.value) and str(path) in str(err.value)


def test_unknown_top_level_key_names_the_key(tmp_path: Path):
    path = _write_variant(tmp_path, 'vendor = "nvidia"', 'vendor = "nvidia"\nvendr = "x"')
    with pytest.raises(SpecError, match="vendr"):
        load_hw(str(path))


def test_empirical_gemm_for_missing_dtype_is_an_error(tmp_path: Path):
    path = _write_variant(tmp_path, "[empirical.gemm.fp8]", "[empirical.gemm.int4]")
    with pytest.raises(SpecError, match=r"empirical\.gemm\.int4"):
        load_hw(str(path))


def test_malformed_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text('schema = "perfscope.hw/1"\nname = "broken\n[memory\n')
    with pytest.raises(SpecError) as err:
        load_hw(str(path))
    assert str(path) in str(err.value) and "TOML" in str(err.value)


def test_malformed_link_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "badlink.toml"
    path.write_text("bandwidth_per_direction_gb_s = = 3\n")
    with pytest.raises(SpecError, match=r"badlink\.toml"):
        load_link(str(path))


def test_empirical_gemm_above_peak_is_refused(tmp_path: Path):
    # a copied spec with lowered peaks once printed MFU 464%: the measurement beats the peak
    path = _write_variant(tmp_path, "tensor_dense_tflops = 989.4", "tensor_dense_tflops = 171.1")
    with pytest.raises(SpecError) as err:
        load_hw(str(path))
    msg = str(err.value)
    assert "empirical.gemm.bf16.tflops" in msg and "794.5" in msg and "171.1" in msg


def test_empirical_memory_above_peak_is_refused(tmp_path: Path):
    path = _write_variant(tmp_path, "bandwidth_gb_s = 3350", "bandwidth_gb_s = 2000")
    with pytest.raises(SpecError, match=r"empirical\.memory\.bandwidth_gb_s.*3180.*2000"):
        load_hw(str(path))


def test_link_busbw_above_wire_is_refused(tmp_path: Path):
    text = (SPECS / "links" / "nvlink4.toml").read_text().replace(
        "allreduce_busbw_gb_s = 367.2", "allreduce_busbw_gb_s = 480.0")  # an NVLS figure
    path = tmp_path / "nvls.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match="NVLS"):
        load_link(str(path))


def test_link_latency_is_refused_with_the_reason(tmp_path: Path):
    text = (SPECS / "links" / "nvlink4.toml").read_text().replace(
        'kind = "nvlink"', 'kind = "nvlink"\nlatency_us = 5.0')
    path = tmp_path / "old-link.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"latency_us.*collective model"):
        load_link(str(path))


def test_scale_up_link_needs_its_topology(tmp_path: Path):
    path = _write_variant(tmp_path, 'gpu_to_gpu_topology = "switch"', "")
    with pytest.raises(SpecError, match="gpu_to_gpu_topology"):
        load_hw(str(path))
    path = _write_variant(tmp_path, "gpu_to_gpu_domain = 8", "gpu_to_gpu_domain = 3")
    with pytest.raises(SpecError, match="gpu_to_gpu_domain"):
        load_hw(str(path))


def test_links_per_gpu_must_multiply_to_the_rate(tmp_path: Path):
    text = (SPECS / "links" / "nvlink4.toml").read_text().replace("links_per_gpu = 18",
                                                                  "links_per_gpu = 12")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match="links_per_gpu"):
        load_link(str(path))


# ---- hardware facts fixed on review (issue 6, item 8), each against two sources -------------


def test_b200_is_the_hgx_per_gpu_part(ref):
    b = gpu("b200")
    assert b.memory_bandwidth_bytes_s == 7700 * GB  # HGX B200 per-GPU table, 7.7 TB/s
    # DS-079 is the DGX system's 64 TB/s / 8 = 8.0 TB/s, not the per-GPU HGX figure
    assert rel(b.memory_bandwidth_bytes_s, ref_value(ref["DS-079"])) == pytest.approx(0.0375)
    assert b.memory_nominal_bytes == 180 * GIB
    assert rel(b.peaks["fp4"].tensor_dense, ref_value(ref["DS-054"])) < 0.001  # 9 PF NVFP4
    assert b.peaks["fp4"].tensor_sparse == 2 * b.peaks["fp4"].tensor_dense
    assert b.peaks["fp4"].tensor_dense == 2 * b.peaks["fp8"].tensor_dense


def test_mi300x_has_its_fp64_peaks():
    m = gpu("mi300x").peaks["fp64"]
    # AMD CDNA 3 white paper endnote MI300-11: FP64 vector 81.7, FP64 matrix 163.4 TFLOPS,
    # 304 CUs x 2.1 GHz: 81.7e12 / (304 x 2.1e9) = 128 FLOP per CU per clock (64 lanes x FMA)
    assert m.vector == pytest.approx(81.7e12)
    assert m.tensor_dense == pytest.approx(163.4e12)
    assert m.vector / (304 * 2.1e9) == pytest.approx(128, rel=0.001)


@pytest.mark.parametrize(("device", "fp32"), [("v100-sxm2-16gb", 15.7), ("v100-sxm2-32gb", 15.7),
                                              ("v100-pcie-16gb", 14.0)])
def test_v100_fp16_vector_rate_is_twice_fp32(device, fp32):
    # CUDA C++ Programming Guide, arithmetic instruction throughput, compute capability 7.x:
    # 128 fp16 vs 64 fp32 add/multiply/FMA results per clock per SM
    hw = gpu(device)
    assert hw.vector_flops("fp32") == pytest.approx(fp32 * TERA)
    assert hw.vector_flops("fp16") == pytest.approx(2 * fp32 * TERA)


# ---- provenance: every cited record is in the repository -------------------------------------

_ID = re.compile(r"\b(?:DS|MB|LLM|GEMM)-\d{3}\b")


def test_every_cited_record_is_kept_in_the_repository(ref):
    cited: dict[str, str] = {}
    for path in [*GPU_FILES, *LINK_FILES, SPECS / "README.md"]:
        for rid in _ID.findall(path.read_text()):
            cited.setdefault(rid, path.name)
    missing = {rid: f for rid, f in cited.items() if rid not in ref}
    assert not missing, f"cited but not in hw_specs/references.json: {missing}"
    for rid in cited:
        assert ref[rid]["source"] and ref[rid]["value"] is not None, rid


def test_kept_records_match_the_shared_reference_set():
    if not SHARED_REFERENCE.is_file():
        pytest.skip("the shared reference set is not in this checkout; the kept copies stand")
    shared = {r["id"]: r for r in json.loads(SHARED_REFERENCE.read_text())}
    for r in json.loads(REFERENCES.read_text())["records"]:
        assert r == shared[r["id"]], r["id"]
