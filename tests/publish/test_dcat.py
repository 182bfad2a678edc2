"""dcat.jsonld: valid JSON-LD that satisfies the mandatory DCAT-AP 3.0.1 shapes (pyshacl), and says what
a catalogue needs: bilingual titles, Ota City as publisher, coverage, license, files with checksums.

The shapes are SEMIC's own, shipped in ``tests/publish/data/`` (source and licence in its README.md); a
missing file fails the tests, it never skips them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pyshacl
import pytest
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from release_samples import SHAPES, mesh_built, settings, zone_built

from publish.export import write_release
from publish.model import BuiltDataset

# plain (open) namespaces: pytest's collection probes module attributes, which rdflib's closed ones warn about
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCTERMS = Namespace("http://purl.org/dc/terms/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
RDF = Namespace("http://www.w3.org/1999/02/22-rdf-syntax-ns#")
XSD = Namespace("http://www.w3.org/2001/XMLSchema#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
PDL = URIRef("https://www.digital.go.jp/resources/open_data/public_data_license_v1.0")
BASE = "https://corridorhub.example.jp"


@pytest.fixture(scope="module")
def shapes() -> Graph:
    if not SHAPES.is_file():
        pytest.fail(
            f"The DCAT-AP 3.0.1 SHACL shapes are missing: expected {SHAPES}"
            " (see tests/publish/data/README.md)",
            pytrace=False,
        )
    return Graph().parse(SHAPES, format="turtle")


def release(
    tmp_path: Path, built: BuiltDataset, *, base_url: str | None = None, built_at: datetime | None = None
) -> Path:
    folder = tmp_path / "release"
    folder.mkdir()
    write_release(
        built, folder, settings(tmp_path), version="2024-06-02", base_url=base_url, built_at=built_at
    )
    return folder


def load(folder: Path) -> Graph:
    return Graph().parse(folder / "dcat.jsonld", format="json-ld")


def assert_conforms(data: Graph, shapes: Graph) -> None:
    conforms, _, text = pyshacl.validate(data, shacl_graph=shapes, inference="none", allow_warnings=False)
    assert conforms, f"DCAT-AP 3.0.1 shapes not satisfied:\n{text}"


def the_dataset(graph: Graph) -> URIRef:
    datasets = list(graph.subjects(RDF.type, DCAT.Dataset))
    assert len(datasets) == 1, datasets
    assert isinstance(datasets[0], URIRef)
    return datasets[0]


@pytest.mark.parametrize("base_url", [None, BASE], ids=["relative", "base-url"])
@pytest.mark.parametrize("make", [mesh_built, zone_built], ids=["mesh", "zone"])
def test_dcat_passes_the_mandatory_dcat_ap_shapes(
    tmp_path: Path, shapes: Graph, make: Callable[[], BuiltDataset], base_url: str | None
) -> None:
    folder = release(tmp_path, make(), base_url=base_url, built_at=datetime(2024, 6, 3, 1, tzinfo=UTC))
    graph = load(folder)
    the_dataset(graph)
    assert len(list(graph.subjects(RDF.type, DCAT.Distribution))) >= 5
    assert_conforms(graph, shapes)


def test_the_shapes_are_live(tmp_path: Path, shapes: Graph) -> None:
    """A dataset without title and a distribution without accessURL are refused: the check is not vacuous."""
    graph = load(release(tmp_path, zone_built()))
    dataset = the_dataset(graph)
    graph.remove((dataset, DCTERMS.title, None))
    distribution = next(graph.objects(dataset, DCAT.distribution))
    graph.remove((distribution, DCAT.accessURL, None))
    conforms, results, text = pyshacl.validate(graph, shacl_graph=shapes, inference="none")
    assert not conforms
    assert "dct:title" in text or str(DCTERMS.title) in text
    assert "accessURL" in text


def test_bilingual_titles_keywords_publisher_license_coverage(tmp_path: Path) -> None:
    built = mesh_built()
    graph = load(release(tmp_path, built))
    dataset = the_dataset(graph)
    titles = set(graph.objects(dataset, DCTERMS.title))
    assert Literal(built.spec.title_ja, lang="ja") in titles
    assert Literal(built.spec.title_en, lang="en") in titles
    languages = {lit.language for lit in graph.objects(dataset, DCTERMS.description)}  # type: ignore[attr-defined]
    assert languages == {"ja", "en"}
    keywords = set(graph.objects(dataset, DCAT.keyword))
    assert Literal("通信品質", lang="ja") in keywords and Literal("network quality", lang="en") in keywords

    publisher = graph.value(dataset, DCTERMS.publisher)
    assert (publisher, RDF.type, FOAF.Agent) in graph
    assert Literal("大田区", lang="ja") in set(graph.objects(publisher, FOAF.name))
    assert Literal("Ota City", lang="en") in set(graph.objects(publisher, FOAF.name))
    assert graph.value(publisher, DCTERMS.identifier) == Literal("131113")

    assert graph.value(dataset, DCTERMS.license) == PDL
    temporal = graph.value(dataset, DCTERMS.temporal)
    assert graph.value(temporal, DCAT.startDate) == Literal(date(2024, 6, 1), datatype=XSD.date)
    assert graph.value(temporal, DCAT.endDate) == Literal(date(2024, 6, 2), datatype=XSD.date)
    spatial = graph.value(dataset, DCTERMS.spatial)
    assert "POLYGON((139.7 35.53" in str(graph.value(spatial, DCAT.bbox))
    assert graph.value(dataset, DCAT.temporalResolution) == Literal("PT1H", datatype=XSD.duration)
    assert float(str(graph.value(dataset, DCAT.spatialResolutionInMeters))) == 250.0


def test_privacy_parameters_are_machine_readable_in_dcat(tmp_path: Path) -> None:
    built = mesh_built()
    graph = load(release(tmp_path, built))
    value = graph.value(the_dataset(graph), URIRef("urn:corridorhub:ns:privacyParameters"))
    assert value is not None and json.loads(str(value)) == built.privacy.as_dict()


def test_each_distribution_has_size_checksum_and_url_of_a_file(tmp_path: Path) -> None:
    folder = release(tmp_path, mesh_built(), base_url=BASE)
    graph = load(folder)
    manifest = {f["path"]: f for f in json.loads((folder / "manifest.json").read_text())["files"]}
    prefix = f"{BASE}/v1/datasets/network-quality-mesh/releases/2024-06-02/"
    seen = set()
    for distribution in graph.objects(the_dataset(graph), DCAT.distribution):
        url = str(graph.value(distribution, DCAT.downloadURL))
        assert url.startswith(prefix) and graph.value(distribution, DCAT.accessURL) == URIRef(url)
        name = url.removeprefix(prefix)
        seen.add(name)
        assert int(str(graph.value(distribution, DCAT.byteSize))) == manifest[name]["bytes"]
        checksum = graph.value(distribution, SPDX.checksum)
        assert isinstance(checksum, BNode)
        assert str(graph.value(checksum, SPDX.checksumValue)) == manifest[name]["sha256"]
        assert graph.value(distribution, DCTERMS.license) == PDL
    assert {
        "network-quality-mesh.parquet",
        "network-quality-mesh.csv",
        "network-quality-mesh.geojson",
    } <= seen
    assert seen == set(manifest) - {"dcat.jsonld", "ckan_package.json"}


def test_without_base_url_the_files_resolve_next_to_dcat_jsonld(tmp_path: Path) -> None:
    folder = release(tmp_path, zone_built())
    graph = load(folder)
    urls = {
        str(graph.value(d, DCAT.downloadURL)) for d in graph.objects(the_dataset(graph), DCAT.distribution)
    }
    assert (folder / "safety-events.csv").resolve().as_uri() in urls
    for url in urls:
        assert Path(url.removeprefix("file://")).is_file(), url
