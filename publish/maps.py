"""Choropleth maps (PNG) of protected figures: ITL1 regions per category, and local authority districts.

Matplotlib's Agg canvas is used directly (no pyplot, no GUI backend, no global backend switch; safe in worker
threads). Maps are drawn in
British National Grid so the UK has its familiar shape. Suppressed regions are hatched grey, regions no included
platform covered are white: neither is ever drawn as a zero.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MultipleLocator

# PuBu without its near-white end, so a true zero is visibly shaded and never looks like "not covered" (white).
CMAP = "pointcount_pubu"
if CMAP not in mpl.colormaps:
    mpl.colormaps.register(
        LinearSegmentedColormap.from_list(CMAP, mpl.colormaps["PuBu"](np.linspace(0.18, 1.0, 256))), name=CMAP
    )
SUPPRESSED_FACE = "#cfcfcf"
UNCOVERED_HATCH = "..."
EDGE = "#6b6b6b"
DPI = 150
SIZE_IN = (6.4, 8.6)
LONDON_CODE = "TLI"


@dataclass
class MapInfo:
    """What was drawn: the values per region and where each region's interior point landed in the PNG."""

    path: Path
    values: dict[str, float | None]  # region code -> shaded value (None: suppressed or not covered)
    pixels: dict[str, tuple[int, int]] = field(default_factory=dict)  # region code -> (column, row) in the PNG
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels
    cmap: str = CMAP
    vmax: float = 0.0
    ticks: list[float] = field(default_factory=list)  # the colour bar's tick values

    @property
    def shaded(self) -> int:
        return sum(v is not None for v in self.values.values())


def map_data(layer: gpd.GeoDataFrame, category: str, measure: str) -> gpd.GeoDataFrame:
    """One row per region: ``value`` (to shade) and ``state`` (value / suppressed / not covered)."""
    col = measure.replace("listings", f"listings_{category}", 1).replace(
        "advertisers", f"advertisers_{category}", 1
    )
    base = measure.split("_", 1)[0]
    flag = f"{base}_{category}_suppressed"
    covered = f"covered_{category}"
    out = layer[["region_code", "region_name", "geometry"]].copy()
    out["value"] = pd.to_numeric(layer[col], errors="coerce").astype(float) if col in layer else np.nan
    suppressed = layer[flag].fillna(False).astype(bool) if flag in layer else False
    is_covered = layer[covered].fillna(False).astype(bool) if covered in layer else out["value"].notna()
    out["state"] = np.where(suppressed, "suppressed", np.where(out["value"].notna(), "value", "not covered"))
    out.loc[~is_covered & ~suppressed, "state"] = "not covered"
    out.loc[out["state"] != "value", "value"] = np.nan
    return gpd.GeoDataFrame(out, geometry="geometry", crs=layer.crs)


def render_map(
    data: gpd.GeoDataFrame,
    path: Path,
    title: str,
    subtitle: str,
    legend_label: str,
    source: str,
    inset_bounds: tuple[float, float, float, float] | None = None,
    tick_unit: int | None = None,
    cap_quantile: float | None = None,
) -> MapInfo:
    """Draw ``data`` (from ``map_data``) to ``path``; ``inset_bounds`` (BNG metres) adds a magnified inset.

    ``tick_unit``: the values are protected counts, so the colour bar is ticked at multiples of this unit (the
    rule's ``smallest_shown``: a multiple of the rounding base, at least the threshold). A default scale of 0, 2,
    4, 6, 8 would print small numbers beside the counts.

    ``cap_quantile`` (e.g. 0.95): the colour scale ends at that quantile of the values and higher values take its
    darkest colour (the bar shows an arrow). For rates of small areas, where a district of a few thousand
    residents with a handful of adverts would otherwise set the scale and leave every other district pale."""
    frame = data.to_crs("EPSG:27700")
    values = frame["value"]
    vmax = float(values.max()) if values.notna().any() else 1.0
    capped = False
    if cap_quantile is not None and values.notna().any():
        top = float(values.quantile(cap_quantile))
        capped = 0 < top < vmax
        vmax = top if capped else vmax
    norm = Normalize(vmin=0, vmax=vmax if vmax > 0 else 1.0, clip=True)

    fig = Figure(figsize=SIZE_IN, dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw_idle = lambda *args, **kwargs: None  # geopandas asks for a redraw per layer; one draw at save
    # Fixed layout (no tight bbox) so map coordinates map predictably to PNG pixels.
    ax = fig.add_axes((0.02, 0.2, 0.96, 0.69))
    _draw(ax, frame, norm)
    ax.set_axis_off()
    ax.set_aspect("equal")

    if inset_bounds is not None:
        inset = fig.add_axes((0.64, 0.58, 0.34, 0.26))
        _draw(inset, frame.cx[inset_bounds[0]:inset_bounds[2], inset_bounds[1]:inset_bounds[3]], norm)
        inset.set_xlim(inset_bounds[0], inset_bounds[2])
        inset.set_ylim(inset_bounds[1], inset_bounds[3])
        inset.set_aspect("equal")
        inset.set_xticks([])
        inset.set_yticks([])
        inset.set_xlabel("")
        inset.set_ylabel("")
        x0, y0, x1, y1 = inset_bounds  # where the inset is, on the main map
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#333333", linewidth=0.8))
        inset.set_title("London (enlarged)", fontsize=7)
        for spine in inset.spines.values():
            spine.set_edgecolor(EDGE)

    cax = fig.add_axes((0.06, 0.175, 0.5, 0.016))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=cax, orientation="horizontal",
                       extend="max" if capped else "neither")
    bar.set_label(legend_label, fontsize=8)
    if tick_unit is not None:
        bar.ax.xaxis.set_major_locator(MultipleLocator(count_step(norm.vmax, tick_unit)))
    bar.ax.tick_params(labelsize=7)
    handles = []
    if (frame["state"] == "suppressed").any():
        handles.append(Patch(facecolor=SUPPRESSED_FACE, edgecolor=EDGE, hatch="////", label="suppressed (too few)"))
    if (frame["state"] == "not covered").any():
        handles.append(Patch(facecolor="white", edgecolor=EDGE, hatch=UNCOVERED_HATCH,
                             label="not covered or not measured (not a zero)"))
    if handles:
        fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.6, 0.135), fontsize=7, frameon=False)

    fig.text(0.03, 0.965, title, fontsize=12.5, fontweight="bold", va="top")
    fig.text(0.03, 0.925, subtitle, fontsize=9, va="top", color="#333333")
    wrapped = "\n".join(textwrap.wrap(source, 118))
    fig.text(0.03, 0.01, wrapped, fontsize=5.6, va="bottom", color="#333333", linespacing=1.35)

    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    ticks = [float(t) for t in bar.ax.get_xticks() if norm.vmin <= t <= norm.vmax]
    # After the draw in savefig the axes' final (aspect-adjusted) transform maps map metres to PNG pixels.
    width, height = (round(v) for v in fig.bbox.size)
    pixels = {}
    for code, point in zip(frame["region_code"], frame.representative_point(), strict=True):
        x, y = ax.transData.transform((point.x, point.y))
        pixels[code] = (int(x), int(height - y))
    return MapInfo(
        path=path,
        values={c: (None if pd.isna(v) else float(v)) for c, v in zip(frame["region_code"], values, strict=True)},
        pixels=pixels,
        size=(width, height),
        vmax=float(norm.vmax),
        ticks=ticks,
    )


def _draw(ax: object, frame: gpd.GeoDataFrame, norm: Normalize) -> None:
    shaded = frame[frame["state"] == "value"]
    suppressed = frame[frame["state"] == "suppressed"]
    uncovered = frame[frame["state"] == "not covered"]
    lw = 0.25 if len(frame) > 50 else 0.5
    if not uncovered.empty:
        uncovered.plot(ax=ax, facecolor="white", edgecolor=EDGE, hatch=UNCOVERED_HATCH, linewidth=lw)
    if not suppressed.empty:
        suppressed.plot(ax=ax, facecolor=SUPPRESSED_FACE, edgecolor=EDGE, hatch="////", linewidth=lw)
    if not shaded.empty:
        shaded.plot(ax=ax, column="value", cmap=CMAP, norm=norm, edgecolor=EDGE, linewidth=lw)


def count_step(vmax: float, base: int, most: int = 6) -> int:
    """A tick step for an axis of protected counts: ``base`` times 1, 2, 5, 10, 20, 50, ..., the smallest giving
    at most ``most`` intervals up to ``vmax``."""
    mult = 1
    while vmax / (base * mult) > most:
        for factor in (2, 2.5, 2):  # 1, 2, 5, 10, 20, 50, ...
            mult = int(mult * factor)
            if vmax / (base * mult) <= most:
                break
    return base * mult


def render_trend(
    history: pd.DataFrame, path: Path, protect: object, tick_unit: int | None = None
) -> Path | None:
    """Small line chart of protected UK totals per run (``protect``: the disclosure rule's ``protect``;
    ``tick_unit``: its ``smallest_shown``, so the y axis is ticked at multiples of it, never at 1..9)."""
    if len(history) < 2:  # one point is no trend; the report's table shows it
        return None
    when = pd.to_datetime(history["started_at"])
    fig = Figure(figsize=(6.4, 2.4), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    ax = fig.add_axes((0.11, 0.2, 0.86, 0.7))
    for column, name, style in (("listings", "Adverts", "-o"), ("advertisers", "Advertisers", "--s")):
        values = [protect(v) for v in history[column]]  # type: ignore[operator]
        y = [np.nan if v is None else v for v in values]
        ax.plot(when, y, style, label=name, markersize=3.5, linewidth=1.4)
    ax.set_ylim(bottom=0)
    if tick_unit is not None:
        ax.yaxis.set_major_locator(MultipleLocator(count_step(ax.get_ylim()[1], tick_unit)))
    ax.set_title("UK totals per run (rounded; suppressed values omitted)", fontsize=8.5, loc="left")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path
