"""The published open datasets, for everyone (no key): what there is, its releases, and their files.

    GET /v1/datasets                                        every dataset with a release
    GET /v1/datasets/{id}                                   one, with its latest release and files
    GET /v1/datasets/{id}/releases                          every release, oldest first
    GET /v1/datasets/{id}/releases/{version}                one release (``latest`` allowed)
    GET /v1/datasets/{id}/releases/{version}/{file}         one file of a release (also HEAD)

A withdrawn dataset (``store.releases.WITHDRAWN_DATASETS``) is listed nowhere and every route of it
answers 410 Gone (``dataset_withdrawn``) saying why, although its earlier releases stay on disk.

Everything is read from the release folders on disk (``store.releases``): a release is visible once
``publish`` has renamed it into place.  A file is served only when the release's ``manifest.json`` lists it
(or it is the manifest itself): ``ETag`` is the manifest's sha256 (strong, quoted), ``If-None-Match`` gives
304, ``Range`` gives 206 (Starlette's ``FileResponse``; an unsatisfiable range is 416, a malformed one 400,
both in the JSON error shape), versioned files are ``Cache-Control: immutable`` for a year.  ``latest`` is
served, not redirected (``curl -O`` just works), with ``Cache-Control: no-cache`` and a
``Content-Location`` naming the versioned URL; its ETag is still the file's sha256.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from api.errors import ApiError, documented, error_response
from api.services import services
from store.releases import LATEST, MANIFEST, WITHDRAWN_DATASETS, Release, ReleaseStore, ServableFile

router = APIRouter(prefix="/v1/datasets", tags=["public"])

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"

DatasetId = Annotated[str, Path(description="Dataset id, e.g. network-quality-mesh", max_length=200)]
Version = Annotated[str, Path(description="A version, or `latest`", max_length=200)]
FileName = Annotated[str, Path(description="A file the release's manifest lists, or manifest.json")]


class Text(BaseModel):
    ja: str
    en: str


class LicenseOut(BaseModel):
    id: str
    title: str
    url: str


class FileOut(BaseModel):
    name: str
    bytes: int
    sha256: str
    media_type: str
    url: str


class ReleaseOut(BaseModel):
    dataset: str
    version: str
    date_from: str | None
    date_to: str | None
    published_at: str | None
    rows: int | None
    privacy: dict[str, Any]
    manifest: str
    files: list[FileOut]


class DatasetOut(BaseModel):
    id: str
    title: Text
    description: Text
    latest_version: str | None
    releases: int
    publisher: Text | None
    license: LicenseOut | None  # the license of the latest release (PDL 1.0)
    licenses: list[LicenseOut]  # it and the licenses it is compatible with (CC BY 4.0)
    links: dict[str, str]


class DatasetDetail(DatasetOut):
    latest: ReleaseOut | None


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class ReleaseList(BaseModel):
    dataset: str
    latest_version: str | None
    releases: list[ReleaseOut]


def store(request: Request) -> ReleaseStore:
    return ReleaseStore(services(request).settings.releases)


def dataset_path(dataset: str) -> str:
    return f"/v1/datasets/{dataset}"


def file_url(dataset: str, version: str, name: str) -> str:
    return f"{dataset_path(dataset)}/releases/{version}/{name}"


def release_out(release: Release) -> ReleaseOut:
    return ReleaseOut(
        dataset=release.dataset,
        version=release.version,
        date_from=release.date_from,
        date_to=release.date_to,
        published_at=release.published_at,
        rows=release.rows,
        privacy=dict(release.privacy),
        manifest=file_url(release.dataset, release.version, MANIFEST),
        files=[
            FileOut(
                name=f.name,
                bytes=f.bytes,
                sha256=f.sha256,
                media_type=f.media_type,
                url=file_url(release.dataset, release.version, f.name),
            )
            for f in release.files
        ],
    )


def dataset_out(releases: ReleaseStore, dataset: str) -> tuple[DatasetOut, Release | None]:
    latest = releases.release(dataset, LATEST)
    count = len(releases.versions(dataset))
    licenses = [LicenseOut(id=x.id, title=x.title, url=x.url) for x in latest.licenses] if latest else []
    publisher = None
    if latest is not None and latest.publisher_ja and latest.publisher_en:
        publisher = Text(ja=latest.publisher_ja, en=latest.publisher_en)
    links = {"self": dataset_path(dataset), "releases": f"{dataset_path(dataset)}/releases"}
    if latest is not None:
        links["latest"] = f"{dataset_path(dataset)}/releases/{latest.version}"
        links["manifest"] = file_url(dataset, latest.version, MANIFEST)
    out = DatasetOut(
        id=dataset,
        title=Text(ja=latest.title_ja, en=latest.title_en) if latest else Text(ja=dataset, en=dataset),
        description=Text(ja=latest.description_ja, en=latest.description_en)
        if latest
        else Text(ja="", en=""),
        latest_version=latest.version if latest else None,
        releases=count,
        publisher=publisher,
        license=licenses[0] if licenses else None,
        licenses=licenses,
        links=links,
    )
    return out, latest


def _no_dataset(dataset: str) -> ApiError:
    return ApiError(
        404, "dataset_not_found", f"No published dataset {dataset!r}: the datasets are listed at /v1/datasets"
    )


def _no_release(dataset: str, version: str) -> ApiError:
    return ApiError(
        404,
        "release_not_found",
        f"No release {version!r} of {dataset!r}: the releases are listed at {dataset_path(dataset)}/releases",
    )


def _withdrawn(dataset: str) -> ApiError:
    return ApiError(
        410,
        "dataset_withdrawn",
        f"{dataset} was withdrawn and its releases are no longer served: {WITHDRAWN_DATASETS[dataset]}",
    )


def _known(releases: ReleaseStore, dataset: str) -> None:
    if dataset in WITHDRAWN_DATASETS:
        raise _withdrawn(dataset)
    if not releases.versions(dataset):
        raise _no_dataset(dataset)


@router.get("", response_model=DatasetList, summary="The published open datasets")
def list_datasets(request: Request) -> DatasetList:
    """Every dataset with at least one release: titles and descriptions in Japanese and English, the
    latest version, the license and links.  Empty until something is published (``corridorhub publish``)."""
    releases = store(request)
    return DatasetList(datasets=[dataset_out(releases, d)[0] for d in releases.dataset_ids()])


@router.get("/{dataset}", response_model=DatasetDetail, summary="One open dataset and its latest release",
            responses=documented(404, 410))  # fmt: skip
def get_dataset(request: Request, dataset: DatasetId) -> DatasetDetail:
    releases = store(request)
    _known(releases, dataset)
    out, latest = dataset_out(releases, dataset)
    return DatasetDetail(**out.model_dump(), latest=release_out(latest) if latest else None)


@router.get("/{dataset}/releases", response_model=ReleaseList, summary="Every release of one dataset",
            responses=documented(404, 410))  # fmt: skip
def list_releases(request: Request, dataset: DatasetId) -> ReleaseList:
    """Oldest version first; each with its JST date range, rows, privacy applied and file URLs."""
    releases = store(request)
    _known(releases, dataset)
    return ReleaseList(
        dataset=dataset,
        latest_version=releases.latest(dataset),
        releases=[release_out(r) for r in releases.releases(dataset)],
    )


@router.get("/{dataset}/releases/{version}", response_model=ReleaseOut, summary="One release",
            responses=documented(404, 410))  # fmt: skip
def get_release(request: Request, dataset: DatasetId, version: Version) -> ReleaseOut:
    """``latest`` stands for the version published last (the answer names the actual version)."""
    releases = store(request)
    _known(releases, dataset)
    release = releases.release(dataset, version)
    if release is None:
        raise _no_release(dataset, version)
    return release_out(release)


_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": {"application/octet-stream": {}}},
    206: {"description": "Part of the file (Range)"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    **documented(400, 404, 410, 416),
}


_FILE_ROUTE = "/{dataset}/releases/{version}/{file}"


@router.head(_FILE_ROUTE, summary="Headers of one file of a release", response_class=Response,
             responses=_FILE_RESPONSES, operation_id="head_release_file")  # fmt: skip
@router.get(_FILE_ROUTE, summary="Download one file of a release", response_class=Response,
            responses=_FILE_RESPONSES, operation_id="get_release_file")  # fmt: skip
def get_file(request: Request, dataset: DatasetId, version: Version, file: FileName) -> Response:
    """Only the files the release's ``manifest.json`` lists, and the manifest.  ``ETag`` is the sha256
    from the manifest; supports ``If-None-Match``, ``Range``/``If-Range`` and ``HEAD``."""
    releases = store(request)
    _known(releases, dataset)
    found = releases.servable(dataset, version, file)
    if found is None:
        resolved = releases.resolve_version(dataset, version)
        if resolved is None:
            raise _no_release(dataset, version)
        raise ApiError(
            404,
            "file_not_found",
            f"Release {dataset}/{resolved} has no file {file!r}: its files are listed in "
            f"{file_url(dataset, resolved, MANIFEST)}",
        )
    return _send(request, found, versioned=version != LATEST, dataset=dataset)


def _send(request: Request, found: ServableFile, *, versioned: bool, dataset: str) -> Response:
    stat = found.path.stat()
    if stat.st_size != found.bytes:
        raise ApiError(
            503,
            "release_damaged",
            f"{found.name} on disk does not match the release manifest ({stat.st_size} bytes, "
            f"listed as {found.bytes}); the operator must restore the release",
        )
    etag = f'"{found.sha256}"'
    disposition = "attachment" if found.is_data else "inline"
    headers = {
        "ETag": etag,
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
        "Content-Disposition": f'{disposition}; filename="{found.name}"',
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if not versioned:
        headers["Content-Location"] = file_url(dataset, found.path.parent.name, found.name)
    if _matches(request.headers.get("if-none-match"), found.sha256):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
    problem = _range_problem(request, stat.st_size, headers)
    if problem is not None:
        return problem
    return FileResponse(found.path, media_type=found.media_type, headers=headers, stat_result=stat)


def _matches(if_none_match: str | None, sha256: str) -> bool:
    """RFC 9110 If-None-Match: ``*`` or any listed tag equal to ours under weak comparison."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == f'"{sha256}"' for t in tags)


def _range_problem(request: Request, size: int, headers: dict[str, str]) -> Response | None:
    """The JSON error for a Range header Starlette's FileResponse would refuse (in plain text), else None.

    Starlette's own parser decides, so that this check and the response that follows always agree."""
    value = request.headers.get("range")
    if value is None:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range not in (headers["ETag"], headers["Last-Modified"]):
        return None  # the range is ignored: the whole file is sent
    try:
        FileResponse._parse_range_header(value, size)
    except RangeNotSatisfiable:
        return error_response(
            416,
            "range_not_satisfiable",
            f"The range {value[:100]!r} lies outside the file's {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    except MalformedRangeHeader as exc:
        return error_response(400, "invalid_range", f"Invalid Range header {value[:100]!r}: {exc.content}")
    return None
