"""`[pages]`: how the hub's pages look (JupyterHub's template_paths, template_vars, logo_file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PageSettings(BaseModel):
    """`[pages]`: the hub's web pages (both the api's and auth's)."""

    model_config = ConfigDict(extra="forbid")

    template_paths: list[Path] = Field(
        default_factory=list, description="Directories searched for page templates before the built-in ones: "
                                          "a file named like a built-in one (login.html, page.html, …) replaces it; "
                                          "each must exist, and its templates compile, when api and auth start.")
    template_vars: dict[str, Any] = Field(
        default_factory=dict, description="Extra variables every template sees; `announcement` is shown on every "
                                          "page, `announcement_<page>` (e.g. announcement_login) on that one.")
    logo_file: Path | None = Field(None, description="Image shown in the navigation bar instead of the name.")
