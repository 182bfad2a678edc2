"""What a differentially private release says about itself: its privacy report and its descriptions.

:func:`dp_parameters` is the ``differential_privacy`` object of ``privacy.json`` (copied into
``datapackage.json``, DCAT, CKAN and the API): the mechanism's parameters and what the noise decided,
never a count of the true data (``publish.dp.TRUE_COUNTS``).  :func:`dp_spec` returns the dataset's spec
as a DP release describes it: the exact releases' suppression sentences ("cells with fewer than k devices
... are suppressed", false under DP) replaced by what holds, with the threshold applied, and each column's
description saying whether it is noisy or empty in this release, so the data dictionary and metadata
state it too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from publish.model import DatasetSpec
from publish.noise import DpPlan, NoisyCells


def dp_parameters(plan: DpPlan, noisy: NoisyCells, days: int) -> dict[str, Any]:
    """The differential-privacy part of the privacy report (privacy.json, datapackage, DCAT, CKAN)."""
    return {
        **noisy.report.as_dict(),
        "privacy_unit": "device-day (one device's samples of one JST day)",
        "guarantee": (
            "epsilon-differential privacy per device-day: adding or removing all of one device's samples "
            "of one JST day changes the probability of any output of this release by at most a factor "
            "exp(epsilon); the ledger bounds the sum over all datasets and releases of that day "
            "(privacy_budget).  A device active on n days is covered with n times that epsilon.  No "
            "protection of an operator's fleet as a whole (many devices) and none of the operator list, "
            "which is public."
        ),
        "contributions_per_day": plan.contributions_per_day,
        "contributions_kept": "a keyed random L of a device-day's cells (HMAC-SHA256, not the values)",
        "epsilon_share": plan.epsilon_share,
        "devices_share": plan.devices_share,
        "days": days,
        "count_caps": dict(plan.counts),
        "mean_bounds": {name: list(bounds) for name, bounds in plan.means.items()},
        "noisy_columns": list(plan.noisy),
        "totals_as_noisy_mean_times_noisy_devices": sorted(plan.totals),
        "empty_columns": list(plan.dropped),
        "cells": "public universe: every time bucket x every corridor cell (privacy zones excluded)",
        "operators": "public list, noised per (cell, operator); not published",
        "operators_count": len(noisy.operators),
        "publication_threshold": noisy.threshold,
        "expected_cells_without_devices_published_per_day": round(noisy.false_cells_per_day, 4),
        "k_rule": (
            "a cell is published when its noisy device count is at least publication_threshold: k, raised "
            "until noise alone would publish at most dp_false_cells cells without any device per day"
        ),
        "dominance_rule": (
            "a cell is suppressed when one operator's share of the noisy per-operator device counts "
            "exceeds dominance_share (noisy values only; device shares, not samples)"
        ),
        "complementary_rule": "not applied: every published value is noisy, differences of them too",
    }


_NOISY_EN = (
    " [Differential privacy in this release: noisy (OpenDP Laplace noise; a mean is over devices, each "
    "device's own mean in the cell counting once); see privacy.json.]"
)
_NOISY_JA = (
    "［この版は差分プライバシー: ノイズを加えた値（平均は端末ごとの平均の平均）。privacy.json 参照。］"
)
_DEVICES_EN = " [The published count is noisy: the true number of devices may be below k, or 0.]"
_DEVICES_JA = "［公開値はノイズを含み、実際の端末数は k 未満（0 を含む）の場合があります。］"
_EMPTY_EN = " [Differential privacy in this release: always empty (not released under this mechanism).]"
_EMPTY_JA = "［この版は差分プライバシー: 常に空欄（この方式では公開しません）。］"
#: Sentences of the exact releases' descriptions that do not hold under differential privacy (a cell is
#: published on its noisy values: it may hold fewer than k devices, or none), removed by :func:`dp_spec`.
_EXACT_ONLY_EN = re.compile(
    r"\s*(Cells|Zone pairs) with fewer than k devices[^.]*\.|\s*\(always at least k[^)]*\)"
)
_EXACT_ONLY_JA = re.compile(r"端末数が k 未満の[^。]*。|（公開する[^）]*常に k 以上）")


def dp_description(threshold: int, dominance: float) -> tuple[str, str]:
    """What a differentially private release publishes, in Japanese and English: only what holds."""
    ja = (
        "この版は差分プライバシー（端末・日単位）: 値はすべてノイズを含み、ノイズを加えた端末数が "
        f"{threshold} 以上で、ノイズを加えた事業者別端末数で一事業者が {dominance:.0%} を超えない"
        "セルを公開します"
        "（公開セルの実際の端末数は k 未満や 0 のこともあります）。"
    )
    en = (
        "This release is differentially private (per device-day): every value is noisy, and a cell is "
        f"published where its noisy device count is at least {threshold} and no operator holds more than "
        f"{dominance:.0%} of its noisy per-operator device counts (the true device count of a published cell "
        "may be below k, or 0)."
    )
    return ja, en


def dp_spec(spec: DatasetSpec, plan: DpPlan, threshold: int, dominance: float) -> DatasetSpec:
    """``spec`` as a differentially private release describes it: the exact releases' suppression
    sentences replaced by what holds under DP (with the ``threshold`` applied), each noisy or empty column
    saying so in its ja/en description."""
    columns = []
    for column in spec.columns:
        if column.name == plan.devices_column:
            en, ja = _NOISY_EN + _DEVICES_EN, _NOISY_JA + _DEVICES_JA
        elif column.name in plan.noisy:
            en, ja = _NOISY_EN, _NOISY_JA
        elif column.name in plan.dropped:
            en, ja = _EMPTY_EN, _EMPTY_JA
        else:
            columns.append(column)
            continue
        columns.append(
            dataclasses.replace(
                column,
                description_en=_EXACT_ONLY_EN.sub("", column.description_en) + en,
                description_ja=_EXACT_ONLY_JA.sub("", column.description_ja) + ja,
            )
        )
    ja, en = dp_description(threshold, dominance)
    return dataclasses.replace(
        spec,
        description_en=f"{_EXACT_ONLY_EN.sub('', spec.description_en).strip()} {en}",
        description_ja=_EXACT_ONLY_JA.sub("", spec.description_ja).strip() + ja,
        columns=tuple(columns),
    )
