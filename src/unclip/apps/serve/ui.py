"""The Gradio UI: one tab per job, on the same checks, queue and runners as the JSON API.

Tabs follow the public unCLIP demos (Karlo's, LAION's): text to image; variations of an
upload (its eta-0 reconstruction beside them, paper section 3.1); interpolation between two
uploads (section 3.2); text diff (section 3.3). Each handler builds the JSON API's request
model from the widgets, so the UI refuses exactly what the API refuses (shown as an error
toast naming the field), queues the job on the model's pool and polls it, reporting the
sampler's steps as a progress bar, and offers the manifest (and the bipartite latent, for
jobs that invert an upload) for download.

Uploads reach a handler as a file in Gradio's upload cache (Gradio refuses files over
``max_file_size`` and paths outside its cache); the handler reads them through the same
size, pixel and type checks as a base64 upload.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from ...errors import UnclipError
from .jobs import RUNNERS, JobResult
from .limits import Limits, RequestError
from .progress import JobProgress, track
from .registry import Registry, ServedModel
from .schemas import PARAMS, REQUESTS

#: conditioning modes as the UI labels them -> the pipeline's names (paper Figure 8)
PRIOR_LABELS = {
    "diffusion prior": "diffusion",
    "AR prior": "ar",
    "z_t (text embedding as z_i)": "text-embed",
    "caption only": "none",
}
DEFAULT_SIZE = "model default"
DOWNLOADS_MAX_AGE_S = 3600.0
# small model outputs (16-64 px) fill their boxes instead of sitting as a dot in the middle
CSS = ".fit-image img { width: 100% !important; height: 100% !important; object-fit: contain; }"
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page must work offline


def _user_error(message: str) -> gr.Error:
    """An error toast for the person using the page; not a server fault, so no traceback in the log."""
    return gr.Error(message, print_exception=False)


class UIJobs:
    """Runs the UI's jobs: checks, queueing, progress, downloads (in a private temporary folder)."""

    def __init__(self, registry: Registry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits
        self.downloads = Path(tempfile.mkdtemp(prefix="unclip-serve-downloads-"))

    def close(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)

    def read_upload(self, field: str, path: str | None) -> str:
        """An upload from Gradio's cache as base64 text for the request model (size checked first)."""
        if not path:
            raise RequestError(field, "upload an image first")
        size = os.path.getsize(path)
        if size > self.limits.max_upload_bytes:
            raise RequestError(field, f"the upload is {size} bytes; the limit is {self.limits.max_upload_bytes}", 413)
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")

    def run(self, kind: str, body: dict[str, Any], progress: Any) -> JobResult:
        """Check ``body`` as the API would, queue the job and wait for it, updating ``progress``."""
        state = JobProgress()
        try:
            req = REQUESTS[kind].model_validate(body)
            served = self.registry.get(req.model)
            params = PARAMS[kind](req, served, self.limits)
            future = self.registry.submit(served, self._tracked, kind, served, params, state)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise _user_error(f"{'.'.join(map(str, err.get('loc', ()))) or 'input'}: {err.get('msg')}") from None
        except UnclipError as exc:  # RequestError, QueueFull, PoolClosed
            raise _user_error(str(exc)) from None
        while True:
            try:
                return future.result(timeout=0.25)
            except FutureTimeout:
                frac = state.fraction()
                progress((state.n, state.total) if frac is not None else 0.0, desc=state.describe())
            except UnclipError as exc:
                raise _user_error(str(exc)) from None

    @staticmethod
    def _tracked(kind: str, served: ServedModel, params: dict[str, Any], state: JobProgress) -> JobResult:
        with track(state):
            return RUNNERS[kind](served.pipe, served.name, **params)

    def files(self, result: JobResult) -> list[str]:
        """Write the manifest (and latents) of a result to a fresh folder; return their paths for download."""
        self._prune()
        folder = self.downloads / f"{result.command}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        paths = [folder / "manifest.json"]
        paths[0].write_text(json.dumps(result.manifest(), indent=2))
        for label, data in result.latents.items():
            paths.append(folder / f"{label}.safetensors")
            paths[-1].write_bytes(data)
        return [str(p) for p in paths]

    def _prune(self) -> None:
        cutoff = time.time() - DOWNLOADS_MAX_AGE_S
        for old in self.downloads.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


def _gallery(result: JobResult) -> list[tuple[Any, str]]:
    captions = []
    for entry in result.entries:
        if "prompt" in entry and "theta" not in entry:
            captions.append(f"{entry['prompt']} (seed {entry['seed']}, #{entry['index']})")
        elif "theta" in entry:
            captions.append(f"theta {entry['theta']:.3f}")
        else:
            captions.append(f"eta {entry.get('eta', 0)} #{entry.get('index', 0)}")
    return list(zip(result.images, captions))


def _size(value: str | None) -> int | None:
    return None if value in (None, "", DEFAULT_SIZE) else int(value)


def build_ui(registry: Registry, limits: Limits) -> tuple[gr.Blocks, UIJobs]:
    """The Blocks app and the job runner it uses (close the runner at shutdown)."""
    jobs = UIJobs(registry, limits)
    default = registry.models[registry.default]
    d = default.pipe.defaults
    sizes = [DEFAULT_SIZE] + [str(s) for s in sorted({s for m in registry.models.values() for s in m.sizes})]
    steps0 = min(d.decoder_steps, limits.max_steps)
    manip_steps0 = min(50, limits.max_steps)

    def size_box(elem_id: str) -> gr.Dropdown:
        info = "larger than the decoder's runs the upsamplers"
        return gr.Dropdown(sizes, value=DEFAULT_SIZE, label="Output size (px)", info=info, elem_id=elem_id)

    with gr.Blocks(title="unclip", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            "## unclip: text to image with CLIP latents (unCLIP / DALL-E 2)\nThe same jobs as the JSON API "
            "(`/api/...`, see docs/serve.md) and the `unclip` command line."
        )
        model = gr.Dropdown(registry.names, value=registry.default, label="Model", elem_id="model")
        with gr.Tabs():
            with gr.Tab("Text to image", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        g_prompts = gr.Textbox(
                            label="Prompts, one per line", value="a red circle", lines=3, elem_id="gen-prompts"
                        )
                        g_num = gr.Slider(
                            1, limits.max_images, value=min(4, limits.max_images), step=1, label="Images per prompt"
                        )
                        g_seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                        g_prior = gr.Dropdown(
                            list(PRIOR_LABELS), value="diffusion prior", label="Conditioning (paper Figure 8)"
                        )
                        g_guid = gr.Slider(
                            0, limits.max_guidance, value=d.decoder_guidance, step=0.5, label="Decoder guidance"
                        )
                        g_steps = gr.Slider(1, limits.max_steps, value=steps0, step=1, label="Decoder steps")
                        g_psteps = gr.Slider(
                            1, limits.max_steps, value=min(d.prior_steps, limits.max_steps), step=1, label="Prior steps"
                        )
                        g_size = size_box("gen-size")
                        g_run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                    with gr.Column(scale=2):
                        g_gallery = gr.Gallery(label="Images", columns=4, format="png", elem_id="gen-gallery")
                        g_files = gr.File(label="Manifest", file_count="multiple", elem_id="gen-files")

            with gr.Tab("Variations", id="vary"):
                with gr.Row():
                    with gr.Column(scale=1):
                        v_image = gr.Image(
                            label="Image",
                            type="filepath",
                            image_mode=None,
                            sources=["upload"],
                            elem_id="vary-image",
                            elem_classes=["fit-image"],
                            height=240,
                        )
                        v_eta = gr.Slider(0, limits.max_eta, value=1.0, step=0.05, label="eta (0 reconstructs)")
                        v_num = gr.Slider(
                            1, limits.max_images, value=min(4, limits.max_images), step=1, label="Variations"
                        )
                        v_seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                        v_steps = gr.Slider(
                            1, limits.max_steps, value=manip_steps0, step=1, label="DDIM steps (inversion and decoding)"
                        )
                        v_guid = gr.Slider(
                            0, limits.max_guidance, value=1.0, step=0.5, label="Guidance (1 inverts best)"
                        )
                        v_size = size_box("vary-size")
                        v_run = gr.Button("Vary", variant="primary", elem_id="vary-run")
                    with gr.Column(scale=2):
                        with gr.Row():
                            v_rec = gr.Image(
                                label="eta 0 reconstruction",
                                format="png",
                                interactive=False,
                                elem_id="vary-recon",
                                elem_classes=["fit-image"],
                                height=240,
                                scale=1,
                            )
                            v_gallery = gr.Gallery(
                                label="Variations", columns=4, format="png", elem_id="vary-gallery", scale=3
                            )
                        v_files = gr.File(
                            label="Manifest and bipartite latent", file_count="multiple", elem_id="vary-files"
                        )

            with gr.Tab("Interpolation", id="interpolate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            i_a = gr.Image(
                                label="Image A (theta 0)",
                                type="filepath",
                                image_mode=None,
                                sources=["upload"],
                                elem_id="interp-a",
                                elem_classes=["fit-image"],
                                height=200,
                            )
                            i_b = gr.Image(
                                label="Image B (theta 1)",
                                type="filepath",
                                image_mode=None,
                                sources=["upload"],
                                elem_id="interp-b",
                                elem_classes=["fit-image"],
                                height=200,
                            )
                        i_frames = gr.Slider(
                            2, limits.max_frames, value=min(6, limits.max_frames), step=1, label="Frames"
                        )
                        i_noise = gr.Radio(
                            ["slerp", "fixed"],
                            value="slerp",
                            label="Noise path",
                            info="slerp of the inverted x_T (ends reconstruct the inputs) or one fixed x_T",
                        )
                        i_seed = gr.Number(0, precision=0, label="Seed (fixed noise)", minimum=0)
                        i_steps = gr.Slider(1, limits.max_steps, value=manip_steps0, step=1, label="DDIM steps")
                        i_guid = gr.Slider(0, limits.max_guidance, value=1.0, step=0.5, label="Guidance")
                        i_size = size_box("interp-size")
                        i_run = gr.Button("Interpolate", variant="primary", elem_id="interp-run")
                    with gr.Column(scale=2):
                        i_gallery = gr.Gallery(label="Frames", columns=6, format="png", elem_id="interp-gallery")
                        i_files = gr.File(
                            label="Manifest and bipartite latents", file_count="multiple", elem_id="interp-files"
                        )

            with gr.Tab("Text diff", id="textdiff"):
                with gr.Row():
                    with gr.Column(scale=1):
                        t_image = gr.Image(
                            label="Image",
                            type="filepath",
                            image_mode=None,
                            sources=["upload"],
                            elem_id="diff-image",
                            elem_classes=["fit-image"],
                            height=240,
                        )
                        t_from = gr.Textbox(
                            label="From: a caption of the image ('' is neutral)",
                            value="a red circle",
                            elem_id="diff-from",
                        )
                        t_to = gr.Textbox(label="To: the target caption", value="a blue circle", elem_id="diff-to")
                        t_theta = gr.Slider(0, 1, value=0.5, step=0.05, label="Max theta (towards the text diff)")
                        t_frames = gr.Slider(
                            2, limits.max_frames, value=min(5, limits.max_frames), step=1, label="Frames"
                        )
                        t_steps = gr.Slider(1, limits.max_steps, value=manip_steps0, step=1, label="DDIM steps")
                        t_guid = gr.Slider(0, limits.max_guidance, value=1.0, step=0.5, label="Guidance")
                        t_size = size_box("diff-size")
                        t_run = gr.Button("Edit", variant="primary", elem_id="diff-run")
                    with gr.Column(scale=2):
                        t_gallery = gr.Gallery(label="Frames", columns=5, format="png", elem_id="diff-gallery")
                        t_files = gr.File(
                            label="Manifest and bipartite latent", file_count="multiple", elem_id="diff-files"
                        )

        def generate(model, prompts, num, seed, prior, guidance, steps, psteps, size, progress=gr.Progress()):
            lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
            body = {
                "model": model,
                "prompts": lines,
                "num_images": int(num),
                "seed": int(seed or 0),
                "prior": PRIOR_LABELS.get(prior, prior),
                "decoder_guidance": float(guidance),
                "steps": int(steps),
                "prior_steps": int(psteps),
                "size": _size(size),
            }
            result = jobs.run("generate", body, progress)
            return _gallery(result), jobs.files(result)

        def vary(model, image, eta, num, seed, steps, guidance, size, progress=gr.Progress()):
            body = {
                "model": model,
                "image": _upload(jobs, "image", image),
                "eta": float(eta),
                "num_images": int(num),
                "seed": int(seed or 0),
                "steps": int(steps),
                "guidance": float(guidance),
                "size": _size(size),
            }
            result = jobs.run("vary", body, progress)
            return result.reconstruction, _gallery(result), jobs.files(result)

        def interpolate(model, a, b, frames, noise, seed, steps, guidance, size, progress=gr.Progress()):
            body = {
                "model": model,
                "image_a": _upload(jobs, "image_a", a),
                "image_b": _upload(jobs, "image_b", b),
                "frames": int(frames),
                "noise": noise,
                "seed": int(seed or 0),
                "steps": int(steps),
                "guidance": float(guidance),
                "size": _size(size),
            }
            result = jobs.run("interpolate", body, progress)
            return _gallery(result), jobs.files(result)

        def textdiff(model, image, from_text, to_text, theta, frames, steps, guidance, size, progress=gr.Progress()):
            body = {
                "model": model,
                "image": _upload(jobs, "image", image),
                "from_text": from_text or "",
                "to_text": to_text or "",
                "max_theta": float(theta),
                "frames": int(frames),
                "steps": int(steps),
                "guidance": float(guidance),
                "size": _size(size),
            }
            result = jobs.run("textdiff", body, progress)
            return _gallery(result), jobs.files(result)

        g_run.click(
            generate,
            [model, g_prompts, g_num, g_seed, g_prior, g_guid, g_steps, g_psteps, g_size],
            [g_gallery, g_files],
            api_name="generate",
        )
        v_run.click(
            vary,
            [model, v_image, v_eta, v_num, v_seed, v_steps, v_guid, v_size],
            [v_rec, v_gallery, v_files],
            api_name="vary",
        )
        i_run.click(
            interpolate,
            [model, i_a, i_b, i_frames, i_noise, i_seed, i_steps, i_guid, i_size],
            [i_gallery, i_files],
            api_name="interpolate",
        )
        t_run.click(
            textdiff,
            [model, t_image, t_from, t_to, t_theta, t_frames, t_steps, t_guid, t_size],
            [t_gallery, t_files],
            api_name="textdiff",
        )
    return blocks, jobs


def _upload(jobs: UIJobs, field: str, path: str | None) -> str:
    try:
        return jobs.read_upload(field, path)
    except RequestError as exc:
        raise _user_error(str(exc)) from None


def mount_ui(app: Any, registry: Registry, limits: Limits, workers: int, queue_size: int) -> tuple[Any, UIJobs]:
    """Mount the UI at ``/`` of ``app`` (after the API's routes, which keep precedence)."""
    blocks, jobs = build_ui(registry, limits)
    # Gradio's own queue hands events over as they come; the model pools do the bounding.
    blocks.queue(
        max_size=(workers + queue_size) * len(registry.names) * 2,
        default_concurrency_limit=(workers + queue_size) * len(registry.names),
    )
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    app = gr.mount_gradio_app(
        app, blocks, path="/", max_file_size=limits.max_upload_bytes, theme=theme, css=CSS, show_error=True
    )
    return app, jobs
