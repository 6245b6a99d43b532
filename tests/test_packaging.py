"""The wheel carries every package and every shipped checkpoint folder.

pyproject.toml lists the packages by hand (checkpoints/ and apps/ are mapped into the
package), so a new folder is easy to forget: the source tree works, the wheel does not.
"""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Each package the wheel should hold -> its folder in the source tree."""
    roots = {"mnistlens": ROOT / "mnistlens", **_mapped()}
    folders = {}
    for name, root in roots.items():
        for path in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            if "__pycache__" in path.parts or not _holds_package_files(path):
                continue
            relative = path.relative_to(root).parts
            folders[".".join([name, *relative])] = path
    return folders


def _mapped() -> dict[str, Path]:
    return {name: ROOT / folder for name, folder in _setuptools()["package-dir"].items()}


def _holds_package_files(path: Path) -> bool:
    return any(path.glob("*.py")) or any(path.glob("*.pt"))


def test_every_package_folder_is_listed():
    listed = set(_setuptools()["packages"])
    missing = sorted(set(_package_folders()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_checkpoint_folder_ships_its_checkpoints():
    data = _setuptools()["package-data"]
    for name, folder in _package_folders().items():
        if any(folder.glob("*.pt")):
            assert "*.pt" in data.get(name, []), f"{name} ({folder}) ships no *.pt"
