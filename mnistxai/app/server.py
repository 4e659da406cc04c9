"""The explorer's web server: a small Starlette app around an ``Explorer``.

Routes (JSON unless said otherwise; a bad request gets ``{"error": one line}`` and status 400):

    GET  /                     the page (``page.html``: canvas, controls, maps, all in one file)
    GET  /api/status           warm-up progress, methods, controls, confused pairs
    GET  /api/digit/{index}    a test digit: pixels (784 in [0, 1]), label, prediction
    GET  /api/choices?kind=class|misclassified|confused&value=N    indices of test digits
    POST /api/explain          {"pixels": 784 numbers | "drawing": a PNG data URL, "methods": [...],
                                "target": null | 0..9, "controls": {group: {option: value}}}
    POST /api/upload           the raw bytes of a picture -> {"pixels"} (as ``--image`` converts)
    POST /api/walk             {"pixels" | "drawing", "target"}: the latent walk to the runner-up
    POST /api/dgn_am           {"class": 0..9, "seed": N}: the generator's image of the class
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from mnistxai import xai
from mnistxai.app.explorer import CONTROLS, DEFAULT_METHODS, MAX_UPLOAD_BYTES, Explorer
from mnistxai.app.explorer import image_from_bytes
from mnistxai.util.errors import InputError

PAGE = Path(__file__).with_name("page.html")
DATA_URL_PREFIX = "data:image/png;base64,"
DRAIN_BYTES = 64 * 2**20


def create_app(explorer: Explorer) -> Starlette:
    """The Starlette app serving ``explorer`` (its warm-up runs elsewhere: see ``__main__``)."""

    def guarded(handler):
        async def endpoint(request: Request):
            try:
                return JSONResponse(await handler(request))
            except InputError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            except Exception as e:  # an internal bug: its traceback in the server's log only
                traceback.print_exc(file=sys.stderr)
                message = f"internal error ({type(e).__name__}); see the server's log"
                return JSONResponse({"error": message}, status_code=500)

        return endpoint

    async def page(request: Request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def status(request: Request):
        return {
            **explorer.progress,
            "methods": sorted(xai.METHODS),
            "defaults": list(DEFAULT_METHODS),
            "controls": CONTROLS,
            "digits": 0 if explorer.images is None else len(explorer.images),
            "vae": explorer.vae is not None and explorer.images is not None,
            "generator": explorer.generator is not None,
            "confused": explorer.confused_pairs(),
        }

    async def digit(request: Request):
        return explorer.digit(int(request.path_params["index"]))

    async def choices(request: Request):
        kind = request.query_params.get("kind", "")
        value = request.query_params.get("value")
        try:
            value = None if value in (None, "") else int(value)
        except ValueError:
            raise InputError(f"value must be an integer, got {value!r}") from None
        return explorer.choices(kind, value)

    async def explain(request: Request):
        body = await _json(request)
        image = _image(body)
        methods = body.get("methods", list(DEFAULT_METHODS))
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise InputError("methods must be a list of method names")
        controls = body.get("controls", {})
        if not isinstance(controls, dict) or not all(
            isinstance(v, dict) for v in controls.values()
        ):
            raise InputError("controls must be {group: {option: value}}")
        target = body.get("target")  # off the event loop: status polls go on meanwhile
        return await run_in_threadpool(explorer.explain, image, methods, target, controls)

    async def walk(request: Request):
        body = await _json(request)
        image = _image(body)
        return await run_in_threadpool(explorer.walk, image, body.get("target"))

    async def dgn_am(request: Request):
        body = await _json(request)
        return await run_in_threadpool(explorer.dgn_am, body.get("class"), body.get("seed", 0))

    async def upload(request: Request):
        blob = await _body(request)
        if not blob:
            raise InputError("the upload is empty: choose a picture of a digit")
        return {"pixels": [round(float(v), 4) for v in image_from_bytes(blob).reshape(-1)]}

    routes = [
        Route("/", page),
        Route("/api/status", guarded(status)),
        Route("/api/digit/{index:int}", guarded(digit)),
        Route("/api/choices", guarded(choices)),
        Route("/api/explain", guarded(explain), methods=["POST"]),
        Route("/api/upload", guarded(upload), methods=["POST"]),
        Route("/api/walk", guarded(walk), methods=["POST"]),
        Route("/api/dgn_am", guarded(dgn_am), methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _body(request: Request) -> bytes:
    """The request's body, refused past ``MAX_UPLOAD_BYTES``. A refused body is still read (up
    to ``DRAIN_BYTES``, then dropped) so that the client, still sending, gets the message
    rather than a reset connection."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_UPLOAD_BYTES:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"the file is {size / 2**20:.1f} MB or more; at most 5 MB are read")
    return b"".join(chunks)


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await _body(request))
    except ValueError:
        raise InputError("the request is not JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request must be a JSON object")
    return body


def _image(body: dict):
    """The digit of a request: ``pixels`` (784 numbers in [0, 1]) or ``drawing`` (a data URL)."""
    if "drawing" in body:
        return _drawing(body["drawing"])
    if "pixels" in body:
        return body["pixels"]
    raise InputError("send the digit as pixels or as a drawing")


def _drawing(url) -> object:
    """A canvas's PNG data URL (white strokes on transparent black) -> (28, 28) in [0, 1]."""
    if not isinstance(url, str) or not url.startswith(DATA_URL_PREFIX):
        raise InputError("the drawing must be a PNG data URL")
    try:
        blob = base64.b64decode(url[len(DATA_URL_PREFIX) :], validate=True)
    except ValueError:
        raise InputError("the drawing is not valid base64") from None
    try:
        return image_from_bytes(blob, light_background=False)
    except InputError as e:
        if "no digit" in str(e):
            raise InputError("the canvas is empty: draw a digit first") from None
        raise
