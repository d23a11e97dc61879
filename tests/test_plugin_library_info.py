"""What libvidtrt_plugins.so records about itself (vidtrtPluginLibraryInfo:
the TensorRT it was built for, its creators), the version check that keeps a
library of the wrong TensorRT major out of TensorRT's registry, and that the
op table (plugins/vidtrt_ops.def), the Python registry and the library's
creators list the same ops. None of this needs TensorRT: the info is read with
ctypes, and TensorRT is stood in for by fake modules."""

from __future__ import annotations

import ctypes.util
import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from native_helpers import plugin_library_or_skip
from vidtrt import _native
from vidtrt import tensorrt as vtrt
from vidtrt.ops import registry


# ---------------------------------------------------------------- parsing


def test_parse_reads_version_and_creators_in_order():
    info = _native.parse_plugin_library_info("tensorrt=10.16;creators=PSLA:1:vidtrt,Other:2:ns")
    assert info.tensorrt == (10, 16)
    assert info.tensorrt_version == "10.16"
    assert info.creators == (("PSLA", "1", "vidtrt"), ("Other", "2", "ns"))
    tensorrt, creators = info  # unpacks as (major.minor, creators)
    assert (tensorrt, creators) == ((10, 16), info.creators)


def test_parse_ignores_keys_it_does_not_know():
    info = _native.parse_plugin_library_info("abi=3;tensorrt=11.1;creators=A:1:vidtrt;built_by=gcc")
    assert info == ((11, 1), (("A", "1", "vidtrt"),))


def test_parse_accepts_a_library_without_creators():
    assert _native.parse_plugin_library_info("tensorrt=11.1;creators=").creators == ()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tensorrt=11.1",  # no creators
        "creators=A:1:vidtrt",  # no version
        "tensorrt=11;creators=A:1:vidtrt",  # major only
        "tensorrt=11.1.0;creators=A:1:vidtrt",  # not major.minor
        "tensorrt=eleven.1;creators=A:1:vidtrt",
        "tensorrt=11.1;creators=A:1",  # namespace missing
        "tensorrt=11.1;creators=A:1:vidtrt:extra",
        "tensorrt=11.1;creators=A::vidtrt",  # empty version
        "tensorrt=11.1;creators=A:1:vidtrt,",  # trailing empty entry
        "tensorrt=11.1;tensorrt=10.8;creators=A:1:vidtrt",
        "tensorrt=11.1;junk;creators=A:1:vidtrt",
    ],
)
def test_parse_refuses_malformed_info(text):
    with pytest.raises(_native.PluginLibraryError):
        _native.parse_plugin_library_info(text)


def test_reading_a_library_without_the_info_symbol_says_to_rebuild():
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for an old plugin library")
    with pytest.raises(_native.PluginLibraryError, match="vidtrtPluginLibraryInfo.*rebuild"):
        _native.read_plugin_library_info(libm)


def test_reading_a_missing_file_is_a_plugin_library_error(tmp_path):
    with pytest.raises(_native.PluginLibraryError, match="cannot load"):
        _native.read_plugin_library_info(tmp_path / "libvidtrt_plugins.so")


# ---------------------------------------------------------------- version check (fake tensorrt modules)


def fake_tensorrt(version):
    return SimpleNamespace(__version__=version)


@pytest.mark.parametrize(
    ("built", "running"),
    [
        ((11, 1), "11.1.0"),
        ((11, 1), "11.0.2.5"),  # older minor of the same major
        ((11, 1), "11.4.0"),  # newer minor
        ((10, 16), "10.8.0.43"),
        ((10, 8), "10.16.0.72"),
    ],
)
def test_same_major_is_accepted_whatever_the_minor(built, running):
    vtrt.check_plugin_library_tensorrt(built, fake_tensorrt(running), "/x/libvidtrt_plugins.so")


@pytest.mark.parametrize(
    ("built", "running", "rebuild_for"),
    [
        ((11, 1), "10.16.0", "10.16"),
        ((10, 16), "11.1.0.106", "11.1"),
        ((10, 8), "11.0", "11.0"),
        ((11, 1), "12.0.1", "12.0"),
    ],
)
def test_other_major_is_refused_with_what_to_build(built, running, rebuild_for):
    path = Path("/somewhere/vidtrt/lib/libvidtrt_plugins.so")
    with pytest.raises(vtrt.PluginLibraryMismatch) as err:
        vtrt.check_plugin_library_tensorrt(built, fake_tensorrt(running), path)
    message = str(err.value)
    assert f"libvidtrt_plugins.so was built for TensorRT {built[0]}.{built[1]}" in message
    assert f"this process has TensorRT {running}" in message
    assert f"TENSORRT_ROOT=<TensorRT {rebuild_for}> pip install -e ." in message
    assert str(path) in message


@pytest.mark.parametrize("module", [SimpleNamespace(), fake_tensorrt(""), fake_tensorrt("unknown")])
def test_a_tensorrt_without_a_readable_version_is_refused(module):
    with pytest.raises(vtrt.PluginLibraryMismatch, match="unknown version|this process has TensorRT unknown"):
        vtrt.check_plugin_library_tensorrt((11, 1), module)


# ---------------------------------------------------------------- the op table (plugins/vidtrt_ops.def)


def op_table_or_skip() -> tuple[registry.OpTableEntry, ...]:
    plugins = registry.source_plugins_dir()
    if plugins is None:
        pytest.skip("vidtrt is not running from a source tree: no plugins/vidtrt_ops.def")
    return registry.read_op_table(plugins / registry.OP_TABLE_NAME)


def test_op_table_lists_the_registered_ops():
    table = op_table_or_skip()
    assert table, "plugins/vidtrt_ops.def lists no op"
    listed = sorted((entry.op_type, entry.plugin_version) for entry in table)
    registered = sorted((op.op_type, op.plugin_version) for op in registry.registered_ops().values())
    assert listed == registered


def test_every_op_has_its_plugin_sources_module_and_readme():
    op_table_or_skip()
    assert registry.op_table_problems(registry.source_plugins_dir()) == []


def fake_source_tree(root: Path, table: str, skip: set[str] = frozenset()) -> Path:
    """plugins/ with `table` as vidtrt_ops.def and an empty file for every
    file of the pattern of every op, except those named in `skip`."""
    plugins = root / "plugins"
    plugins.mkdir(parents=True)
    (plugins / registry.OP_TABLE_NAME).write_text(table)
    for entry in registry.read_op_table(plugins / registry.OP_TABLE_NAME):
        (plugins / entry.directory).mkdir()
        for pattern in registry.PLUGIN_FILES:
            name = pattern.format(op=entry.directory)
            if f"{entry.directory}/{name}" not in skip:
                (plugins / entry.directory / name).touch()
    return plugins


def test_op_table_problems_name_what_disagrees(tmp_path):
    ops = registry.registered_ops()
    lines = ['VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator)',
             'VIDTRT_OP(fixed_size_nms, FixedSizeNMS, "1", FixedSizeNmsPluginCreator)',
             'VIDTRT_OP(psla_v2, PSLAv2, "1", Psla2PluginCreator)']  # fmt: skip
    plugins = fake_source_tree(tmp_path, "// a comment: VIDTRT_OP(x)\n\n" + "\n".join(lines) + "\n",
                               skip={"psla/README.md", "fixed_size_nms/fixed_size_nms_cuda.cu"})  # fmt: skip
    ops = {"PSLA": dataclasses.replace(ops["PSLA"], plugin_version="2"), "FixedSizeNMS": ops["FixedSizeNMS"],
           "RelationPropagation": ops["RelationPropagation"]}  # fmt: skip
    assert sorted(registry.op_table_problems(plugins, ops)) == sorted([
        "PSLA: plugin version '1' in vidtrt_ops.def, '2' in the registry",
        "PSLA: plugins/psla/README.md is missing",
        "FixedSizeNMS: plugins/fixed_size_nms/fixed_size_nms_cuda.cu is missing",
        "vidtrt_ops.def lists PSLAv2 but no such op is registered",
        "RelationPropagation is registered but vidtrt_ops.def has no line for it",
    ])  # fmt: skip
    # An op whose Python module is not vidtrt/ops/<directory>.py.
    plugins = fake_source_tree(tmp_path / "other", 'VIDTRT_OP(nms, FixedSizeNMS, "1", FixedSizeNmsPluginCreator)\n')
    assert registry.op_table_problems(plugins, {"FixedSizeNMS": ops["FixedSizeNMS"]}) == [
        "FixedSizeNMS: its function lives in vidtrt.ops.fixed_size_nms, not in vidtrt.ops.nms (the directory "
        "vidtrt_ops.def gives it)"
    ]
    # Versions compare by value: the registry's older than the table's, and
    # equal ones held in distinct string objects.
    plugins = fake_source_tree(tmp_path / "versions", 'VIDTRT_OP(psla, PSLA, "2", PslaPluginCreator)\n'
                               'VIDTRT_OP(fixed_size_nms, FixedSizeNMS, "1.10", FixedSizeNmsPluginCreator)\n')  # fmt: skip
    versions = {"PSLA": dataclasses.replace(ops["PSLA"], plugin_version="1"),
                "FixedSizeNMS": dataclasses.replace(ops["FixedSizeNMS"], plugin_version="".join(["1.", "10"]))}  # fmt: skip
    assert registry.op_table_problems(plugins, versions) == [
        "PSLA: plugin version '2' in vidtrt_ops.def, '1' in the registry"
    ]
    # ... and one whose directory sorts before the module's name.
    plugins = fake_source_tree(tmp_path / "before", 'VIDTRT_OP(a_nms, FixedSizeNMS, "1", FixedSizeNmsPluginCreator)\n')
    assert registry.op_table_problems(plugins, {"FixedSizeNMS": ops["FixedSizeNMS"]}) == [
        "FixedSizeNMS: its function lives in vidtrt.ops.fixed_size_nms, not in vidtrt.ops.a_nms (the directory "
        "vidtrt_ops.def gives it)"
    ]


def test_source_plugins_dir_is_this_checkout_s():
    """The tests run from a source tree (CI, an editable install): its
    plugins/, so that the op-table tests above run instead of skipping."""
    plugins = Path(__file__).resolve().parents[1] / "plugins"
    assert (plugins / registry.OP_TABLE_NAME).is_file()
    assert registry.source_plugins_dir() == plugins


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('VIDTRT_OP(psla, PSLA, 1, PslaPluginCreator)', "malformed line"),  # version unquoted
        ('VIDTRT_OP(psla, PSLA, "1")', "malformed line"),
        ('VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator);', "malformed line"),
        ('VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator)\nVIDTRT_OP(psla, Other, "1", OtherCreator)', "directory 'psla' is listed twice"),
        ('VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator)\nVIDTRT_OP(other, PSLA, "2", OtherCreator)', "op_type 'PSLA' is listed twice"),
    ],
)  # fmt: skip
def test_op_table_refuses_malformed_lines(tmp_path, line, message):
    path = tmp_path / registry.OP_TABLE_NAME
    path.write_text("// ops\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        registry.read_op_table(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('// ops\n\nVIDTRT_OP(psla, PSLA, 1, PslaPluginCreator)\n', 3),
        ('VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator)\nVIDTRT_OP(psla, Other, "1", OtherCreator)\n', 2),
    ],
)  # fmt: skip
def test_op_table_errors_name_the_line(tmp_path, text, where):
    """Line numbers count from 1, as an editor's do."""
    path = tmp_path / registry.OP_TABLE_NAME
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^{path}:{where}: "):
        registry.read_op_table(path)


# ---------------------------------------------------------------- the built library




def test_library_records_the_tensorrt_it_was_built_against():
    plugin_library_or_skip()
    info = _native.plugin_library_info()
    headers = tuple(int(part) for part in _native.build_info()["tensorrt_headers_version"].split(".")[:2])
    assert info.tensorrt == headers


def test_library_lists_each_creator_once():
    plugin_library_or_skip()
    creators = _native.plugin_library_info().creators
    assert creators, "the plugin library lists no creators"
    assert len(set(creators)) == len(creators), creators
    assert len({(name, namespace) for name, _, namespace in creators}) == len(creators), creators


def test_every_registered_op_has_a_creator_in_the_library():
    plugin_library_or_skip()
    creators = set(_native.plugin_library_info().creators)
    ops = registry.registered_ops()
    assert ops, "no custom op is registered"
    missing = [
        f"{op.op_type} v{op.plugin_version}"
        for op in ops.values()
        if (op.op_type, op.plugin_version, registry.DOMAIN) not in creators
    ]
    assert not missing, f"registered ops without a creator in libvidtrt_plugins.so: {missing}; creators: {sorted(creators)}"


def test_library_creators_are_the_op_table_in_order():
    """getCreators() is built from plugins/vidtrt_ops.def: the same ops, names
    and versions, in the file's order. (With test_op_table_lists_the_registered_ops,
    the .def file, the registry and the library list the same ops.)"""
    table = op_table_or_skip()
    plugin_library_or_skip()
    expected = [(entry.op_type, entry.plugin_version, registry.DOMAIN) for entry in table]
    assert list(_native.plugin_library_info().creators) == expected


def test_every_vidtrt_creator_is_a_registered_op():
    # A creator no exporter emits a node for is dead code inside TensorRT.
    plugin_library_or_skip()
    ops = {(op.op_type, op.plugin_version) for op in registry.registered_ops().values()}
    orphans = [
        f"{name} v{version}"
        for name, version, namespace in _native.plugin_library_info().creators
        if namespace == registry.DOMAIN and (name, version) not in ops
    ]
    assert not orphans, f"creators in libvidtrt_plugins.so without a registered op: {orphans}"


# ---------------------------------------------------------------- load_plugin_library with a fake TensorRT


class FakeRegistry:
    """Stands in for trt.IPluginRegistry: load_library registers what the
    library says it has, minus `drop`."""

    def __init__(self, creators, drop=()):
        self.creators = set(creators) - set(drop)
        self.loaded: list[str] = []
        self.asked: list[tuple[str, str, str]] = []

    def load_library(self, path):
        self.loaded.append(path)
        return object()

    def get_creator(self, name, version, namespace=""):
        self.asked.append((name, version, namespace))
        return object() if (name, version, namespace) in self.creators else None


@pytest.fixture
def fresh_loader(monkeypatch):
    """load_plugin_library with an empty once-per-process cache and a fake
    `tensorrt` module whose version the test sets."""
    monkeypatch.setattr(vtrt, "_loaded_plugin_library", [])
    module = SimpleNamespace(__version__=None, get_plugin_registry=lambda: pytest.fail("the test passes its registry"))
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def test_load_refuses_a_library_of_another_major_before_tensorrt_sees_it(fresh_loader):
    plugin_library_or_skip()
    info = _native.plugin_library_info()
    other_major = 10 if info.tensorrt[0] != 10 else 11
    fresh_loader.__version__ = f"{other_major}.3.0"
    registry_ = FakeRegistry(info.creators)
    with pytest.raises(vtrt.PluginLibraryMismatch, match=f"built for TensorRT {info.tensorrt_version} but this process has TensorRT {other_major}.3.0"):
        vtrt.load_plugin_library(registry_)
    assert registry_.loaded == [], "a mismatched library must not reach TensorRT"
    assert vtrt._loaded_plugin_library == []


def test_load_registers_the_library_and_checks_every_creator(fresh_loader):
    path = plugin_library_or_skip()
    info = _native.plugin_library_info()
    fresh_loader.__version__ = f"{info.tensorrt[0]}.{info.tensorrt[1] + 1}.0"  # another minor is fine
    registry_ = FakeRegistry(info.creators)
    assert vtrt.load_plugin_library(registry_) == path
    assert registry_.loaded == [str(path)]
    assert registry_.asked == list(info.creators)
    assert vtrt.load_plugin_library(registry_) == path  # once per process
    assert registry_.loaded == [str(path)]


def test_load_fails_when_a_creator_is_missing_after_loading(fresh_loader):
    plugin_library_or_skip()
    info = _native.plugin_library_info()
    fresh_loader.__version__ = f"{info.tensorrt[0]}.{info.tensorrt[1]}.0"
    dropped = info.creators[-1]
    with pytest.raises(RuntimeError, match=f"no creator for {':'.join(dropped)}"):
        vtrt.load_plugin_library(FakeRegistry(info.creators, drop=[dropped]))
    assert vtrt._loaded_plugin_library == []


def test_doctor_shows_the_library_tensorrt_and_creators():
    plugin_library_or_skip()
    from vidtrt import doctor

    info = _native.plugin_library_info()
    (row,) = [c for c in doctor.components() if c.name == "plugin library"]
    assert f"built for TensorRT {info.tensorrt_version}" in row.detail
    for name, version, namespace in info.creators:
        assert f"{namespace}::{name} v{version}" in row.detail


def test_doctor_flags_a_library_of_another_major_than_the_installed_tensorrt(monkeypatch):
    plugin_library_or_skip()
    from vidtrt import doctor

    info = _native.plugin_library_info()
    other = "10.16.0" if info.tensorrt[0] != 10 else "11.1.0"
    real_version = doctor._module_version
    monkeypatch.setattr(doctor, "_module_version", lambda name: other if name == "tensorrt" else real_version(name))
    found, detail = doctor._plugin_library()
    assert not found
    assert f"built for TensorRT {info.tensorrt_version} but this process has TensorRT {other}" in detail
