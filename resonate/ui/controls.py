"""Preset picker, per-stage controls and output options, built from the stages' config dataclasses.

A stage's expander appears when the engine's registry offers that stage. The first controls in
each expander are the ones people reach for (tabulated in ``FIELDS``); every other field of the
config dataclass is rendered generically under "Advanced", so a new engine setting shows up in
the app without UI code. Widget values start from the chosen preset and are handed to the engine
as overrides on top of it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import streamlit as st

from resonate.audio.io import BIT_DEPTHS, MP3_BITRATES
from resonate.config import Setting, config_to_dict, setting_info
from resonate.errors import ResonateError
from resonate.pipeline import ChainSettings, OutputOptions, stage_configs
from resonate.presets import load_preset
from resonate.stages import STAGE_INFO, STAGE_ORDER, load_registry
from resonate.ui import presets
from resonate.ui.session import load_prefs

MAX_EQ_BANDS = 4
# The stems each Demucs model produces (htdemucs and htdemucs_ft: four; htdemucs_6s: six).
STAGE_TITLES = {name: info.panel_title for name, info in STAGE_INFO.items()}


# The headline controls of each stage, in order; anything not listed here is under "Advanced".
# Labels, units, help, ranges and steps come from the config fields themselves
# (resonate.config.setting): a setting with a range and a step is a slider over exactly the
# values the engine accepts.
FIELDS: dict[str, tuple[str, ...]] = {
    "separate": ("model", "preset", "gains_db", "denoise", "keep_percent"),
    "denoise": ("strength", "stationary", "noise_start_s", "noise_end_s"),
    "restore": ("strength",),
    "match": ("strength", "max_correction_db"),
    "extend": ("strength",),
    "master": ("highpass_hz", "low_shelf_hz", "low_shelf_db", "high_shelf_hz", "high_shelf_db", "bands", "linear_phase",
               "compressor", "comp_threshold_db", "comp_ratio", "comp_attack_ms", "comp_release_ms", "makeup_db",
               "limiter", "limiter_threshold_db"),
    "loudness": ("target_lufs", "true_peak_dbtp"),
}


class Controls:
    """Widgets for one page (``scope`` keeps the Restore and Batch pages' widgets apart)."""

    def __init__(self, scope: str, disabled: bool = False):
        self.scope, self.disabled = scope, disabled

    def key(self, *parts: str) -> str:
        return ".".join((self.scope, "cfg", *parts))

    def _initial(self, key: str, value: Any) -> dict[str, Any]:
        # A value kept in session state (e.g. after visiting another page) wins over the preset's.
        return {} if key in st.session_state else {"value": value}

    # -- preset

    def preset(self) -> str:
        names = presets.choices()
        key = f"{self.scope}.preset"
        if st.session_state.get(key) is not None and st.session_state[key] not in names:
            del st.session_state[key]           # a saved preset whose file was removed
        preset = st.selectbox("Preset", names, key=key, disabled=self.disabled, format_func=presets.label)
        loaded_key = f"{self.scope}.preset_loaded"
        if st.session_state.get(loaded_key) != preset:
            # A new preset: every stage control starts again from its values (the output format stays).
            stale = [k for k in st.session_state if str(k).startswith(f"{self.scope}.cfg.")
                     and not str(k).startswith(self.key("output"))]
            for k in stale:
                del st.session_state[k]
            st.session_state[loaded_key] = preset
        description = load_preset(preset).get("description")
        if description:
            st.caption(description)
        return preset

    # -- stages

    def stages(self, preset: str, duration_s: float | None = None) -> ChainSettings:
        """Every available stage's expander; returns the chosen settings (validated by the engine)."""
        registry = load_registry()
        base = stage_configs(ChainSettings(preset))
        preset_skip = set(load_preset(preset).get("skip", []))
        overrides: dict[str, dict[str, Any]] = {}
        skip: list[str] = []
        for name in STAGE_ORDER:
            if name not in registry:
                continue
            with st.expander(STAGE_TITLES.get(name, name.capitalize())):
                key = self.key(name, "bypass")
                if st.toggle("Bypass", key=key, disabled=self.disabled, **self._initial(key, name in preset_skip)):
                    skip.append(name)
                overrides[name] = self._stage(name, base[name], duration_s)
        return ChainSettings(preset, overrides, tuple(skip))

    def _stage(self, stage: str, config: Any, duration_s: float | None) -> dict[str, Any]:
        headline = FIELDS.get(stage, ())
        values: dict[str, Any] = {}
        special = getattr(self, f"_{stage}_special", None)
        if special is not None:
            values.update(special(config, duration_s))
        hints = typing.get_type_hints(type(config))
        for f in dataclasses.fields(config):
            if f.name in headline and f.name not in values:
                values[f.name] = self._field(stage, f.name, hints[f.name], getattr(config, f.name),
                                             setting_info(config, f.name), slider=True)
        rest = [f for f in dataclasses.fields(config) if f.name not in headline]
        if rest:
            advanced_key = self.key(stage, "advanced")
            if st.toggle("Advanced", key=advanced_key, disabled=self.disabled, **self._initial(advanced_key, False)):
                for f in rest:
                    values[f.name] = self._field(stage, f.name, hints[f.name], getattr(config, f.name),
                                                 setting_info(config, f.name))
        return values

    def _field(self, stage: str, name: str, hint: Any, value: Any, spec: Setting | None, slider: bool = False) -> Any:
        key = self.key(stage, name)
        label = spec.title if spec else name.replace("_", " ").capitalize()
        kw = dict(key=key, disabled=self.disabled, help=(spec.help or None) if spec else None)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
        core = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if core is bool:
            return st.toggle(label, **kw, **self._initial(key, bool(value)))
        if slider and spec is not None and spec.range and spec.step and core in (int, float) and value is not None:
            lo, hi = (float(x) for x in spec.range)
            v = min(max(float(value), lo), hi)     # the engine refused anything outside already
            return st.slider(label, lo, hi, step=float(spec.step), **kw, **self._initial(key, v))
        if core is int:
            return st.number_input(label, step=1, **kw, **self._initial(key, value))
        if core is float:
            # None is a valid choice for optional numbers: an empty box.
            return st.number_input(label, format="%g", **kw, **self._initial(key, None if value is None else float(value)))
        if core is str:
            return st.text_input(label, **kw, **self._initial(key, value or ""))
        # Structured fields without a dedicated control keep the preset's value.
        return config_to_dict(value) if dataclasses.is_dataclass(value) else value

    # -- stage-specific controls

    def _separate_special(self, config: Any, duration_s: float | None) -> dict[str, Any]:
        from resonate.separation import community
        from resonate.separation.models import MODEL_NAMES, model_stems
        from resonate.separation.remix import PRESETS, resolve_settings
        from resonate.ui import community as community_ui
        from resonate.ui.session import optional_path

        models_dir = load_prefs().models_dir
        folder = optional_path(models_dir)
        try:
            extra = community.catalogue()
        except ResonateError:
            extra = {}
        options = [*MODEL_NAMES, *extra]
        key = self.key("separate", "model")
        model = st.selectbox("Separation model", options, key=key, disabled=self.disabled,
                             format_func=lambda n: community_ui.summary(extra[n], folder) if n in extra else n,
                             help="Demucs: htdemucs_ft is about 4x slower and a little better; htdemucs_6s adds guitar "
                                  "and piano. Community models (Settings lists them) remove the crowd or the reverb.",
                             **self._initial_index(key, options, config.model))
        key = self.key("separate", "preset")
        names = list(PRESETS)
        stem_preset = st.selectbox("Stem treatment", names, key=key, disabled=self.disabled,
                                   **self._initial_index(key, names, config.preset))
        chosen = extra.get(model)
        keep = config.keep_percent
        if chosen is not None:
            community_ui.show_outcome()
            st.caption(f"{chosen.title}, by {chosen.authors}: {community.PURPOSES[chosen.purpose]}. "
                       f"{chosen.size_text()}. Licence: {chosen.licence}. Without its files this stage is skipped "
                       "and the rest of the chain runs.")
            community_ui.download_button(chosen, folder, self.scope, disabled=self.disabled)
            keep = self._field("separate", "keep_percent", float, config.keep_percent,
                               setting_info(config, "keep_percent"), slider=True)
            sources = chosen.stems
        else:
            st.caption(f"Weights from {models_dir} (Settings)" if models_dir else
                       "Weights are downloaded by Demucs on first use; offline, set a models folder in Settings. "
                       "Without weights this stage is skipped and the rest of the chain runs.")
            sources = model_stems(model)
        start = resolve_settings(sources, stem_preset, config.gains_db if config.preset == stem_preset else {},
                                 config.denoise if config.preset == stem_preset else {})
        gains, gates = {}, {}
        st.caption("Per-stem gain (dB) and gating strength")
        for stem in sources:
            c1, c2 = st.columns(2)
            gkey, dkey = self.key("separate", stem_preset, stem, "gain"), self.key("separate", stem_preset, stem, "gate")
            gains[stem] = c1.slider(f"{stem} gain (dB)", -24.0, 12.0, step=0.5, key=gkey, disabled=self.disabled,
                                    **self._initial(gkey, float(start[stem].gain_db)))
            gates[stem] = c2.slider(f"{stem} denoise", 0.0, 1.0, step=0.05, key=dkey, disabled=self.disabled,
                                    **self._initial(dkey, float(start[stem].denoise)))
        return {"model": model, "preset": stem_preset, "gains_db": gains, "denoise": gates, "keep_percent": keep}

    def _initial_index(self, key: str, options, value) -> dict[str, Any]:
        if key in st.session_state:
            return {}
        return {"index": list(options).index(value) if value in options else 0}

    def _denoise_special(self, config: Any, duration_s: float | None) -> dict[str, Any]:
        key = self.key("denoise", "use_region")
        use = st.toggle("Learn the noise from a chosen region", key=key, disabled=self.disabled,
                        help="Pick a stretch with only noise (crowd, hiss), e.g. before the music starts. "
                             "Off: the quietest stretch of the recording is used.",
                        **self._initial(key, config.noise_start_s is not None))
        if not use:
            return {"noise_start_s": None, "noise_end_s": None}
        key = self.key("denoise", "region")
        top = float(duration_s) if duration_s else 600.0
        lo, hi = config.noise_start_s or 0.0, config.noise_end_s or min(2.0, top)
        start, end = st.slider("Noise region (s)", 0.0, top, step=0.1, key=key, disabled=self.disabled,
                               **self._initial(key, (min(lo, top), min(hi, top))))
        return {"noise_start_s": float(start), "noise_end_s": float(end)}

    def _master_special(self, config: Any, duration_s: float | None) -> dict[str, Any]:
        key = self.key("master", "highpass_on")
        on = st.toggle("High-pass filter", key=key, disabled=self.disabled,
                       **self._initial(key, bool(config.highpass_hz)))     # 0 Hz is no filter, as in the stage
        highpass = None
        if on:
            key = self.key("master", "highpass_hz")
            highpass = st.slider("High-pass (Hz)", 10.0, 300.0, step=1.0, key=key, disabled=self.disabled,
                                 **self._initial(key, float(config.highpass_hz or 30.0)))
        st.caption("EQ bands (peaking)")
        bands = []
        for i in range(MAX_EQ_BANDS):
            preset_band = config.bands[i] if i < len(config.bands) else None
            c0, c1, c2, c3 = st.columns([1, 2, 2, 2])
            on_key = self.key("master", f"band{i}", "on")
            if not c0.checkbox(f"Band {i + 1}", key=on_key, disabled=self.disabled,
                               **self._initial(on_key, preset_band is not None)):
                continue
            fk, gk, qk = (self.key("master", f"band{i}", p) for p in ("freq", "gain", "q"))
            freq = c1.number_input("Freq (Hz)", 20.0, 20000.0, key=fk, disabled=self.disabled,
                                   **self._initial(fk, float(preset_band.freq_hz if preset_band else 1000.0)))
            gain = c2.number_input("Gain (dB)", -18.0, 18.0, step=0.5, key=gk, disabled=self.disabled,
                                   **self._initial(gk, float(preset_band.gain_db if preset_band else 0.0)))
            q = c3.number_input("Q", 0.1, 10.0, step=0.1, key=qk, disabled=self.disabled,
                                **self._initial(qk, float(preset_band.q if preset_band else 1.0)))
            bands.append({"freq_hz": freq, "gain_db": gain, "q": q})
        return {"highpass_hz": highpass, "bands": bands}

    # -- output

    def output(self) -> OutputOptions:
        with st.expander("Output format"):
            key = self.key("output", "format")
            fmt = st.radio("Format", ("wav", "mp3"), key=key, horizontal=True, disabled=self.disabled,
                           format_func=str.upper)
            bit_depth, bitrate = "24", 320
            if fmt == "wav":
                key = self.key("output", "bit_depth")
                bit_depth = st.radio("Bit depth", BIT_DEPTHS, key=key, horizontal=True, disabled=self.disabled,
                                     format_func=lambda b: "32-bit float" if b == "32f" else f"{b}-bit",
                                     **self._initial_index(key, BIT_DEPTHS, "24"))
            else:
                key = self.key("output", "mp3_bitrate")
                bitrate = st.select_slider("MP3 bitrate (kb/s)", MP3_BITRATES, key=key, disabled=self.disabled,
                                           **self._initial(key, 320))
            key = self.key("output", "sample_rate")
            rate = st.selectbox("Sample rate", (None, 44100, 48000, 96000), key=key, disabled=self.disabled,
                                format_func=lambda r: "Same as input" if r is None else f"{r / 1000:g} kHz")
        return OutputOptions(format=fmt, bit_depth=bit_depth, mp3_bitrate=bitrate, sample_rate=rate)


def _save_preset(scope: str, settings: ChainSettings) -> None:
    """Save-as-preset button: writes the settings that were on screen, then picks the new preset."""
    name = st.session_state.get(f"{scope}.save_name", "")
    try:
        path = presets.save_preset(name, settings, st.session_state.get(f"{scope}.save_description", ""))
    except (ResonateError, OSError) as exc:
        st.session_state[f"{scope}.save_outcome"] = ("error", f"Not saved: {getattr(exc, 'strerror', None) or exc}")
        return
    st.session_state[f"{scope}.preset"] = str(path)
    st.session_state[f"{scope}.preset_loaded"] = str(path)     # the controls keep their values
    st.session_state[f"{scope}.save_outcome"] = ("success", f"Saved as preset “{path.stem}” ({path})")


def save_preset_controls(controls: Controls, settings: ChainSettings) -> None:
    scope = controls.scope
    with st.popover("Save as preset", disabled=controls.disabled, icon=":material/bookmark_add:"):
        st.text_input("Name", key=f"{scope}.save_name", placeholder="my-club-nights", max_chars=40)
        st.text_input("Description (optional)", key=f"{scope}.save_description")
        st.caption(f"Saved in {presets.user_presets_dir()}, beside your settings; the CLI takes it with "
                   "--preset FILE.toml.")
        st.button("Save preset", key=f"{scope}.save_preset", on_click=_save_preset, args=(scope, settings))
    outcome = st.session_state.pop(f"{scope}.save_outcome", None)
    if outcome:
        (st.success if outcome[0] == "success" else st.error)(outcome[1])


def build_settings(controls: Controls, duration_s: float | None) -> tuple[ChainSettings | None, OutputOptions]:
    """All of a page's processing controls; settings are None (with the reason shown) when invalid."""
    preset = controls.preset()
    settings = controls.stages(preset, duration_s)
    output = controls.output()
    try:
        stage_configs(settings)         # the engine's own validation, before anything runs
    except ResonateError as exc:
        st.error(str(exc))
        return None, output
    save_preset_controls(controls, settings)
    return settings, output
