"""`semigen review RUN`: a local web application (Starlette's FastAPI on uvicorn, Jinja2 pages,
a little plain JavaScript, nothing from the internet) to check pseudo-labels, label the
suggested images by keyboard, find likely errors among the user's own labels, and see the
generated images; every decision goes at once to ``RUN/added_labels.csv``.

Safe by default (docs/review.md): the run's writer lock held while serving; a fresh token
carried by the printed address for every client (kept in a cookie after the first page);
bound to 127.0.0.1 and answering only to its names (no DNS rebinding); images addressed by
their number in the run's data, never by a path, and no file of the run opened through a link
that leaves it; escaping on in every page; a decision only taken as JSON from a page of the
same origin, and one that cannot be saved said so, not taken."""

from __future__ import annotations

import hashlib
import secrets
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..config import CLASS_PRIORS
from ..data.cells import visible
from ..data.images import png_bytes, read_image
from ..evaluation.report import LOW_VARIETY, class_prior_sentence, metrics_section
from ..run import Layout, replacing
from ..run.layout import OutsideRun
from .state import Review, SaveFailed

HERE = Path(__file__).parent
PAGE = 48  # images per page
THUMB_SIDE = 128  # a thumbnail's longest side, from the original file where there is one
KEYS = "1234567890qwertyuiopasdfghjklzxcvbnm"  # one key per class, in class order
COOKIE = "semigen_review_token"


class LabelChoice(BaseModel):
    part: Literal["labeled", "unlabeled"]
    index: int
    label: int | None  # a class index; None takes the added label back (undo)


class SkipChoice(BaseModel):
    index: int
    skipped: bool


def create_app(review: Review, token: str | None = None,
               hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> FastAPI:
    """The application for `review`. With `token`, every request needs it (query or cookie);
    `hosts` are the host names it answers to ("*": any, for a non-local --host)."""
    app = FastAPI(title="semigen review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(RequestValidationError, refused_body)
    app.add_exception_handler(SaveFailed, lambda _, e: JSONResponse({"error": str(e)}, 500))
    app.add_exception_handler(OutsideRun, lambda _, e: Response(
        str(e), 403, media_type="text/plain"))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    app.middleware("http")(guard(token))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages(review))
    app.include_router(images_and_decisions(review))
    return app


def guard(token: str | None):
    """The check every request passes: the token (when there is one), decisions only as JSON
    from a page of the same origin; and the headers every answer carries."""
    async def check(request: Request, call_next):
        if token is not None:
            given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
            if not secrets.compare_digest(given.encode(), token.encode()):
                return Response("semigen review: open the address with its token, as printed "
                                "when the server started", status_code=403,
                                media_type="text/plain")
        if request.method == "POST":  # only the pages' own scripts decide
            origin = request.headers.get("origin")
            if (request.headers.get("content-type", "").split(";")[0] != "application/json"
                    or (origin and urlsplit(origin).netloc != request.headers.get("host"))):
                return Response("cross-site request refused", status_code=403,
                                media_type="text/plain")
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        # another site's page may not embed the images, nor learn the token from a referrer
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self' 'unsafe-inline'")
        return response
    return check


def refused_body(_: Request, error: RequestValidationError) -> JSONResponse:
    """A body or parameter that is not what the page sends, in one line: where and what was
    expected, never the value itself (it may not even be JSON: NaN)."""
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'not valid')}"}, 422)


def shown(value):
    """Every value a page prints, with the characters that hide what it says (control
    characters, right-to-left overrides that make ``gpj.exe`` read as ``exe.jpg``) made
    visible as ``[U+202E]``; escaping stays Jinja's (a Markup value stays Markup)."""
    if not isinstance(value, str):
        return value
    return Markup(visible(value)) if isinstance(value, Markup) else visible(value)


def class_index(review: Review, c: int) -> int:
    if not 0 <= c < len(review.classes):
        raise HTTPException(404, f"no class {c}")
    return c


def pages(review: Review) -> APIRouter:
    """The HTML pages: overview, a class, Label next, label errors, generated, figures."""
    router = APIRouter()
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
    templates.env.finalize = shown
    keys = {c: KEYS[c] for c in range(min(len(review.classes), len(KEYS)))}

    def render(request: Request, template: str, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {
            "run": review.run, "classes": review.classes, "keys": keys,
            "added": len(review.decisions.labels), "left_out": review.decisions.left_out,
            **context})

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        return render(request, "overview.html", rows=overview_rows(review), pairs=review.pairs,
                      label=review.metrics.get("label", {}),
                      unlabeled=len(review.data.unlabeled),
                      suggestions=len(review.suggestions), shares=class_shares(review))

    @router.get("/class/{c}", response_class=HTMLResponse)
    def by_class(request: Request, c: int, page: int = 1, second: int | None = None):
        return render(request, "class.html", **class_page(review, c, page, second))

    @router.get("/next", response_class=HTMLResponse)
    def label_next(request: Request):
        return render(request, "next.html", total=len(review.suggestions))

    @router.get("/errors", response_class=HTMLResponse)
    def label_errors(request: Request, page: int = 1):
        return render(request, "errors.html", **errors_page(review, page))

    @router.get("/generated", response_class=HTMLResponse)
    def generated(request: Request):
        return render(request, "generated.html", groups=review.generated,
                      low_variety=LOW_VARIETY)

    @router.get("/figures", response_class=HTMLResponse)
    def figures(request: Request):
        # metrics_section escapes what it prints; the same table as the report's
        return render(request, "figures.html", table=metrics_section(review.metrics),
                      has_report=Layout(review.run).report.is_file(),
                      label=review.metrics.get("label", {}))

    @router.get("/report")
    def report():
        path = Layout(review.run).inside(Layout(review.run).report)
        if not path.is_file():
            raise HTTPException(404, "this run has no report.html yet (semigen report RUN)")
        return FileResponse(path, media_type="text/html")

    return router


def overview_rows(review: Review) -> list[dict]:
    """Per class: the user's labels, the labels added here, pseudo-labels, their mean
    confidence and how many fall below one half."""
    predicted, rows = review.predicted, []
    for c, name in enumerate(review.classes):
        mine = review.probs[predicted == c].max(1) if len(predicted) else np.zeros(0)
        rows.append({"index": c, "name": name,
                     "labeled": int((review.data.labeled.labels == c).sum()),
                     "added": sum(v == name for v in review.decisions.labels.values()),
                     "pseudo": len(mine), "mean_confidence": float(mine.mean())
                     if len(mine) else None,
                     "low": int((mine < 0.5).sum())})
    return rows


def class_shares(review: Review) -> dict | None:
    """How common each class is: labeled, EM's estimate among the unlabeled images, what the
    label stage aimed at, and the sentence that says how to use the estimate; None where the
    run recorded none (or recorded something that does not fit its classes)."""
    found = review.metrics.get("represent", {})
    try:
        columns = [[float(v) for v in found[key]] if key in found else None
                   for key in ("labeled_prior", "class_prior_estimate", "class_prior")]
        fits = all(v is None or len(v) == len(review.classes) for v in columns)
        if not fits or columns[0] is None or columns[2] is None \
                or found.get("class_prior_setting", "labeled") not in CLASS_PRIORS:
            return None
    except (TypeError, ValueError):
        return None
    labeled, estimate, aimed = columns
    return {"sentence": class_prior_sentence(found),
            "rows": [{"name": name, "labeled": labeled[c], "aimed": aimed[c],
                      "estimate": None if estimate is None else estimate[c]}
                     for c, name in enumerate(review.classes)]}


def class_page(review: Review, c: int, page: int, second: int | None) -> dict:
    """A class's pseudo-labeled images, the least sure first, `PAGE` a page; with `second`,
    only those whose runner-up class it is (a confused pair)."""
    c, probs = class_index(review, c), review.probs
    members = np.flatnonzero(review.predicted == c)
    order = np.argsort(-probs[members], axis=1)
    runner_up = order[:, 1] if probs.shape[1] > 1 else order[:, 0]
    if second is not None:
        class_index(review, second)
        keep = runner_up == second
        members, runner_up = members[keep], runner_up[keep]
    confidence = probs[members, c]
    by_confidence = np.argsort(confidence, kind="stable")  # the least sure first
    pages = max(1, -(-len(members) // PAGE))
    page = min(max(1, page), pages)
    cards = [{"index": int(members[k]), "confidence": float(confidence[k]),
              "second": int(runner_up[k]),
              "second_probability": float(probs[members[k], runner_up[k]]),
              "decided": review.decisions.labels.get(review.data.unlabeled.ids[members[k]])}
             for k in by_confidence[(page - 1) * PAGE: page * PAGE]]
    return {"c": c, "name": review.classes[c], "cards": cards, "total": len(members),
            "page": page, "pages": pages, "second": second}


def errors_page(review: Review, page: int) -> dict:
    rows = review.label_issues["rows"]
    pages = max(1, -(-len(rows) // PAGE))
    page = min(max(1, page), pages)
    shown = [r | {"decided": review.decisions.labels.get(r["id"])}
             for r in rows[(page - 1) * PAGE: page * PAGE]]
    return {"rows": shown, "flagged": review.label_issues["flagged"],
            "source": review.label_issues["source"], "total": len(rows), "page": page,
            "pages": pages}


def images_and_decisions(review: Review) -> APIRouter:
    """The images (by number, never by path) and the decisions, taken as JSON."""
    router = APIRouter()

    @router.get("/thumb/{part}/{index}.png")
    def thumb(part: Literal["labeled", "unlabeled"], index: int):
        if not 0 <= index < len(review.images(part)):
            raise HTTPException(404, "no such image")
        return Response(thumbnail(review, part, index), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @router.get("/generated-image/{c}/{k}.png")
    def generated_image(c: int, k: int):
        group = review.generated[class_index(review, c)] if review.generated else None
        if group is None or not 0 <= k < len(group["files"]):
            raise HTTPException(404, "no such image")
        return FileResponse(Layout(review.run).inside(group["files"][k]), media_type="image/png")

    @router.get("/api/next")
    def next_image():
        return next_suggestion(review)

    @router.post("/api/label")
    def set_label(choice: LabelChoice):
        images = review.images(choice.part)
        if not 0 <= choice.index < len(images):
            raise HTTPException(404, "no such image")
        label = None if choice.label is None else review.classes[class_index(review,
                                                                             choice.label)]
        review.decisions.set_label(images.ids[choice.index], label)
        return JSONResponse({"added": len(review.decisions.labels)})

    @router.post("/api/skip")
    def set_skip(choice: SkipChoice):
        if not 0 <= choice.index < len(review.data.unlabeled):
            raise HTTPException(404, "no such image")
        review.decisions.set_skipped(review.data.unlabeled.ids[choice.index], choice.skipped)
        return JSONResponse({"skipped": len(review.decisions.skipped)})

    return router


def next_suggestion(review: Review) -> dict:
    """Label next's state: the counts, and the first suggestion not yet labeled or skipped."""
    decided, ids = review.decisions, review.data.unlabeled.ids
    labeled = sum(ids[i] in decided.labels for i in review.suggestions)
    skipped = sum(ids[i] in decided.skipped and ids[i] not in decided.labels
                  for i in review.suggestions)
    left = [i for i in review.suggestions
            if ids[i] not in decided.labels and ids[i] not in decided.skipped]
    found = {"total": len(review.suggestions), "labeled": labeled, "skipped": skipped,
             "left": len(left), "added": len(decided.labels)}
    if not left:
        return found | {"index": None}
    i = left[0]
    order = np.argsort(-review.probs[i])
    return found | {"index": int(i), "predicted": int(order[0]),
                    "confidence": float(review.probs[i, order[0]]),
                    "second": int(order[1]) if len(order) > 1 else None,
                    "image": f"/thumb/unlabeled/{i}.png"}


def thumbnail(review: Review, part: str, index: int) -> bytes:
    """A PNG of the image, at most THUMB_SIDE on its longest side: from the original file where
    the run's data is a folder (sharper than the size training uses), else from the decoded
    array; made once and kept under ``RUN/review/thumbs/`` by the image's id."""
    image_id = review.image_id(part, index)
    key = hashlib.sha256(image_id.encode("utf-8", "surrogateescape")).hexdigest()
    path = Layout(review.run).inside(Layout(review.run).review_thumbnail(key))
    if path.is_file():
        return path.read_bytes()
    image = None
    if review.source_root is not None:
        original = review.source_root / image_id
        if original.is_file():
            image, _ = read_image(original, THUMB_SIDE)
    if image is None:
        image = review.images(part).images[index]
    height, width = image.shape[:2]
    scale = THUMB_SIDE / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    data = png_bytes(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, "wb") as f:
        f.write(data)
    return data


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def listening_socket(host: str, port: int):
    """A socket bound to `host`:`port` (0: a free port), or a one-line refusal."""
    from ..config import ConfigError

    if not host.strip():
        raise ConfigError("--host is empty: name the address to listen on (127.0.0.1, the "
                          "default, for this machine alone)")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must lie between 0 (any free port) and 65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        listener.bind((host, port))
        listener.listen(128)  # a browser opened at once waits in the queue, is not refused
    except OSError as e:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there "
                          f"({e.strerror or e}); choose another --port or --host") from None
    return listener


def address(listener, host: str) -> str:
    """The address the browser opens: the host as bound (a name stays a name; every
    interface: this machine's name), IPv6 in brackets, the port the socket got."""
    port = listener.getsockname()[1]
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8765, suggest: int = 50,
          generated_per_class: int = 16) -> None:
    """Compute what the pages show, print the address with its token, serve until Ctrl-C,
    holding the run's writer lock all the while (a second server, or a `semigen label` of the
    run, is refused: two writers of added_labels.csv would lose decisions)."""
    import uvicorn

    from ..config import ConfigError
    from ..run import lock_run, unlock_run
    from .state import load

    if suggest < 0 or generated_per_class < 0:
        raise ConfigError("--suggest and --generated-per-class must be 0 or more (got "
                          f"{suggest}, {generated_per_class})")
    listener = listening_socket(host, port)  # a clear sentence before minutes of predictions
    lock_run(run)
    try:
        review = load(run, suggest, generated_per_class)
        # a token on this machine too: another account on it could otherwise read the images
        # and change the labels through 127.0.0.1
        token = secrets.token_urlsafe(18)
        local = host in LOCAL_HOSTS
        app = create_app(review, token, ("127.0.0.1", "localhost", "[::1]") if local else ("*",))
        print(f"review: {address(listener, host)}?token={token}  (Ctrl-C stops it)", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[listener])
    finally:
        listener.close()
        unlock_run(run)
