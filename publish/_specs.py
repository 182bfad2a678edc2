"""The four aggregate datasets as the public sees them: titles, descriptions, keywords and columns (ja/en)."""

from __future__ import annotations

import pyarrow as pa

from publish.model import DatasetSpec, OutputColumn

UTC_US = pa.timestamp("us", tz="UTC")
MESH_LEVEL = 5  # JIS 250 m: the finest cell published
COARSE_MESH_LEVEL = 3  # JIS 1 km: the same measures one level up, where 250 m cells are too thin
OUTSIDE_ZONES = "outside"  # zone of an event outside every corridor zone, or without a position
ALL_TYPES = "all"  # device_type of the per-day total row of fleet-activity


def _c(
    name: str, type_: pa.DataType, unit: str, ja: str, en: str, dja: str, den: str, kind: str = "measure"
) -> OutputColumn:
    return OutputColumn(name, type_, unit, ja, en, dja, den, kind)


def _mesh_columns(time_name: str, time_ja: str, time_en: str) -> tuple[OutputColumn, ...]:
    return (
        _c(
            time_name,
            UTC_US,
            "UTC instant (CSV: JST)",
            f"{time_ja}（開始時刻）",
            f"{time_en} start",
            f"集計した{time_ja}の開始時刻。Parquet では UTC、CSV では日本時間で表示。",
            f"Start of the Japan-time {time_en.lower()} (UTC in Parquet, JST in CSV).",
            "dimension",
        ),
        _c(
            "mesh_code",
            pa.int64(),
            "JIS X 0410 mesh code",
            "地域メッシュコード",
            "Mesh code",
            "JIS X 0410 地域メッシュコード（4分の1地域メッシュ 250 m は10桁、3次メッシュ 1 km は8桁）。",
            "JIS X 0410 regional mesh code (quarter mesh, 250 m: 10 digits; level 3, 1 km: 8 digits).",
            "dimension",
        ),
        _c(
            "mesh_level",
            pa.int8(),
            "JIS X 0410 level",
            "メッシュ次数",
            "Mesh level",
            "メッシュの階層（5 = 250 m、3 = 1 km）。1 km の行は、その中の 250 m の行をまとめた値。",
            "Level of the mesh (5 = 250 m, 3 = 1 km). A 1 km row aggregates the 250 m cells inside it.",
            "dimension",
        ),
        _c(
            "samples",
            pa.int64(),
            "count",
            "サンプル数",
            "Samples",
            "セル内の計測サンプル数。",
            "Number of samples in the cell.",
        ),
        _c(
            "devices",
            pa.int64(),
            "count",
            "端末数",
            "Devices",
            "セル内で計測した異なる端末の数（公開するセルは常に k 以上）。",
            "Distinct devices that sampled in the cell (always at least k in a published cell).",
        ),
    )


_NETWORK_MEASURES = (
    ("rsrp_dbm", "dBm", "RSRP（基準信号受信電力）", "RSRP (reference signal received power)"),
    ("sinr_db", "dB", "SINR（信号対干渉雑音比）", "SINR (signal to interference plus noise ratio)"),
    ("rtt_ms", "ms", "往復遅延時間", "round-trip time"),
    ("dl_mbps", "Mbit/s", "下りスループット", "downlink throughput"),
    ("ul_mbps", "Mbit/s", "上りスループット", "uplink throughput"),
)
_QUANTILES = (
    ("p10", "10パーセンタイル", "10th percentile"),
    ("median", "中央値", "median"),
    ("p90", "90パーセンタイル", "90th percentile"),
)

NETWORK_QUALITY = DatasetSpec(
    id="network-quality-mesh",
    title_ja="5G 通信品質（250 m メッシュ・1時間）",
    title_en="5G network quality per 250 m mesh and hour",
    description_ja=(
        "羽田・蒲田 5G コリドーの実証車両・ロボットが測った通信品質（RSRP、SINR、遅延、上り下りスループット、"
        "5G 接続の割合）を、250 m メッシュ（と 1 km メッシュ）・1時間ごとに集計。端末数が k 未満のセルや、"
        "1事業者が大半を占めるセルは秘匿しています。"
    ),
    description_en=(
        "Radio and network quality (RSRP, SINR, latency, downlink and uplink throughput, share of time on "
        "5G NR) measured by the trial vehicles and robots of the Haneda-Kamata 5G corridor, per 250 m mesh "
        "cell (and 1 km cell) and Japan-time hour. Cells with fewer than k devices or dominated by one "
        "operator are suppressed."
    ),
    keywords_ja=("5G", "通信品質", "地域メッシュ", "自動運転", "羽田", "蒲田", "大田区"),
    keywords_en=("5G", "network quality", "JIS mesh", "autonomous driving", "Haneda", "Kamata", "Ota City"),
    columns=(
        *_mesh_columns("hour_start", "時間帯", "Hour"),
        *(
            _c(
                f"{m}_{q}",
                pa.float64(),
                unit,
                f"{ja}の{qja}",
                f"{qen.capitalize()} of the {en}",
                f"セル内サンプルの{ja}の{qja}（線形補間）。",
                f"{qen.capitalize()} of the {en} over the cell's samples (linear interpolation).",
            )
            for m, unit, ja, en in _NETWORK_MEASURES
            for q, qja, qen in _QUANTILES
        ),
        _c(
            "nr_share",
            pa.float64(),
            "ratio 0-1",
            "5G 接続の割合",
            "Share on 5G NR",
            "無線方式が分かるサンプルのうち 5G NR（SA または NSA）だった割合。",
            "Share of samples with a known radio technology that were on 5G NR (SA or NSA).",
        ),
    ),
    spatial=True,
    time_resolution="PT1H",
    mesh_level=MESH_LEVEL,
)

TRAFFIC_SPEED = DatasetSpec(
    id="traffic-speed-mesh",
    title_ja="走行速度（250 m メッシュ・15分）",
    title_en="Traffic speed per 250 m mesh and 15 minutes",
    description_ja=(
        "実証車両が測った対地速度を、250 m メッシュ（と 1 km メッシュ）・15分ごとに集計（平均と85パーセン"
        "タイル）。停止中のサンプルも含む実際の交通の速さです。端末数が k 未満のセルなどは秘匿しています。"
    ),
    description_en=(
        "Ground speed measured by the trial vehicles, per 250 m mesh cell (and 1 km cell) and Japan-time "
        "15-minute slot: mean and 85th percentile, stopped samples included (the speed traffic actually "
        "had). Cells with fewer than k devices or dominated by one operator are suppressed."
    ),
    keywords_ja=("交通", "走行速度", "地域メッシュ", "自動運転", "羽田", "蒲田", "大田区"),
    keywords_en=("traffic", "speed", "JIS mesh", "autonomous driving", "Haneda", "Kamata", "Ota City"),
    columns=(
        *_mesh_columns("slot_start", "15分間", "15-minute slot"),
        _c(
            "mean_speed_kmh",
            pa.float64(),
            "km/h",
            "平均速度",
            "Mean speed",
            "セル内サンプルの対地速度の平均。",
            "Mean ground speed over the cell's samples.",
        ),
        _c(
            "p85_speed_kmh",
            pa.float64(),
            "km/h",
            "85パーセンタイル速度",
            "85th percentile speed",
            "セル内サンプルの対地速度の85パーセンタイル（線形補間）。",
            "85th percentile ground speed over the cell's samples (linear interpolation).",
        ),
    ),
    spatial=True,
    time_resolution="PT15M",
    mesh_level=MESH_LEVEL,
)

_DAY = _c(
    "day_jst",
    pa.date32(),
    "JST date",
    "日付",
    "Day",
    "日本時間の日付。",
    "Japan-time calendar day.",
    "dimension",
)

SAFETY_EVENTS = DatasetSpec(
    id="safety-events",
    title_ja="自動運転の安全関連イベント（ゾーン別・日別）",
    title_en="Automated-driving safety events per zone and day",
    description_ja=(
        "実証車両の安全関連イベント（自動運転の解除、緊急停止、ヒヤリハットなど）を、コリドーのゾーン・日・"
        "種類ごとに集計した件数と、自動運転で走った 100 km あたりの件数。"
    ),
    description_en=(
        "Safety-related events of the trial vehicles (disengagements, emergency stops, near misses...) per "
        "corridor zone, Japan-time day and kind: counts, and rates per 100 km driven in autonomous mode."
    ),
    keywords_ja=("自動運転", "安全", "ヒヤリハット", "羽田", "蒲田", "大田区"),
    keywords_en=("autonomous driving", "safety", "disengagement", "Haneda", "Kamata", "Ota City"),
    columns=(
        _DAY,
        _c(
            "zone",
            pa.string(),
            "",
            "ゾーン",
            "Zone",
            f"コリドーのゾーン ID（どのゾーンにも入らない、または位置のないイベントは {OUTSIDE_ZONES}）。",
            f"Corridor zone id ({OUTSIDE_ZONES} for events outside every zone or without a position).",
            "dimension",
        ),
        _c(
            "kind",
            pa.string(),
            "",
            "イベント種類",
            "Event kind",
            "イベントの種類。",
            "Event kind.",
            "dimension",
        ),
        _c("events", pa.int64(), "count", "件数", "Events", "イベントの件数。", "Number of events."),
        _c(
            "devices",
            pa.int64(),
            "count",
            "端末数",
            "Devices",
            "このイベントを記録した異なる端末の数（公開するセルは常に k 以上）。",
            "Distinct devices that reported such events (always at least k in a published cell).",
        ),
        _c(
            "events_per_100km_autonomous",
            pa.float64(),
            "1/100 km",
            "自動運転 100 km あたりの件数",
            "Events per 100 km autonomous",
            "件数 ÷（そのゾーン・日に自動運転で走った距離 / 100 km）。"
            "距離の集計が秘匿条件を満たさない時は空。",
            "Events divided by the distance driven in autonomous mode in the zone that day, per 100 km; "
            "empty when that distance does not pass the suppression rules itself.",
        ),
    ),
    spatial=False,
    time_resolution="P1D",
)

FLEET_ACTIVITY = DatasetSpec(
    id="fleet-activity",
    title_ja="実証車両の稼働状況（日別・車種別）",
    title_en="Fleet activity per day and device type",
    description_ja=(
        "日ごと・車種ごとの稼働端末数、走行距離、稼働時間、自動運転の割合。車種 all は全車種の合計です。"
    ),
    description_en=(
        "Active devices, distance, operating hours and autonomous share per Japan-time day and device "
        f"type; device type {ALL_TYPES} is the total over all types."
    ),
    keywords_ja=("自動運転", "稼働状況", "走行距離", "羽田", "蒲田", "大田区"),
    keywords_en=("autonomous driving", "fleet", "distance", "Haneda", "Kamata", "Ota City"),
    columns=(
        _DAY,
        _c(
            "device_type",
            pa.string(),
            "",
            "車種",
            "Device type",
            f"端末の種類（bus, shuttle, car, robot, drone, other）。{ALL_TYPES} は合計。",
            f"Kind of device (bus, shuttle, car, robot, drone, other); {ALL_TYPES} is the total.",
            "dimension",
        ),
        _c(
            "active_devices",
            pa.int64(),
            "count",
            "稼働端末数",
            "Active devices",
            "その日に状態を送った異なる端末の数。",
            "Distinct devices that reported their state that day.",
        ),
        _c(
            "distance_km",
            pa.float64(),
            "km",
            "走行距離",
            "Distance",
            "走行（トリップ）中の距離の合計。",
            "Distance driven on trips.",
        ),
        _c(
            "operating_hours",
            pa.float64(),
            "h",
            "稼働時間",
            "Operating hours",
            "走行（トリップ）中の時間の合計。",
            "Time spent on trips.",
        ),
        _c(
            "autonomous_share",
            pa.float64(),
            "ratio 0-1",
            "自動運転の割合",
            "Autonomous share",
            "運転モードの分かる走行中サンプルのうち自動運転だった割合。",
            "Share of moving samples with a known mode that were in autonomous mode.",
        ),
    ),
    spatial=False,
    time_resolution="P1D",
)
