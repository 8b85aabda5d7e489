"""Which container carries the output: decided at ingest from the probed streams (pure).

The promise is that the source's audio reaches the output untouched (packet for packet, never
re-encoded) and that every audio and subtitle track is kept. The workers re-encode only the video
(h264, h265 or AV1), so the choice of container turns on the source's other streams:

1. **MP4** when every audio stream is a codec MP4 carries for players (AAC, MP3, AC-3, E-AC-3, Opus,
   FLAC, ALAC) and every subtitle is text (written as MP4's own `mov_text`). Not for audio its source
   trims at the end (WebM/Matroska `DiscardPadding`, as Opus encoders write it): FFmpeg 5.1 writes
   that trim into MP4/MOV but decodes them untrimmed, so the decoded audio would gain the padding.
2. else **MOV** when the audio is PCM (any layout: QuickTime's own) or one of the MP4 codecs and the
   subtitles are text: MOV keeps what MP4 keeps of the video (exact rational frame timing in the track
   timescale, the display rotation), which Matroska as FFmpeg 5.1 writes it does not (timestamps
   rounded to 1 ms, no display matrix).
3. else **Matroska** (`.mkv`): DTS, TrueHD, MP2, Vorbis, WavPack, PGS/DVD/DVB bitmap subtitles, ASS
   with its styles and fonts, titles and every disposition. Not for a rotated video (the rotation
   would be lost).
4. else the job is refused at ingest with `E_STREAM_UNSUPPORTED`, naming the streams, before any work.

Among containers that carry every stream bit-exact, the first that also keeps every track's
language, title and dispositions is chosen (MOV, for one, keeps no titles and only the `default`
flag; Matroska keeps them all); when none keeps everything, the first that carries the streams is
chosen and the result says what it loses. The tables below were measured with FFmpeg 5.1 (mux, then
probe back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from infiniteflow_common.errors import InfiniteFlowError

Container = Literal["mp4", "mov", "mkv"]
PREFERENCE: tuple[Container, ...] = ("mp4", "mov", "mkv")
"""Most playable first; MOV before Matroska for its exact timing and rotation."""
CONTENT_TYPES: dict[str, str] = {"mp4": "video/mp4", "mov": "video/quicktime", "mkv": "video/x-matroska"}
NAMES: dict[str, str] = {"mp4": "MP4", "mov": "MOV", "mkv": "Matroska"}

MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
MOV_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
"""Besides every `pcm_*` codec (QuickTime's own, big- and little-endian, integer and float)."""
MKV_AUDIO = frozenset(
    {
        "aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac", "vorbis", "dts", "truehd", "mlp",
        "wavpack", "tta",
        "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_u8",
        "pcm_f32le", "pcm_f64le", "pcm_alaw", "pcm_mulaw",
    }
)  # fmt: skip
"""Matroska takes only these PCM layouts (no big-endian float, no signed 8-bit: QuickTime-only ones)."""
TEXT_SUBTITLES = frozenset({"mov_text", "subrip", "srt", "text", "webvtt"})
"""Plain text subtitles: converted to the container's text format without losing a word."""
MKV_SUBTITLES = frozenset(
    {"subrip", "srt", "text", "mov_text", "webvtt", "ass", "ssa", "hdmv_pgs_subtitle", "dvd_subtitle",
     "dvb_subtitle"}
)  # fmt: skip
VIDEO = {"mp4": {"h264", "h265", "av1"}, "mov": {"h264", "h265"}, "mkv": {"h264", "h265", "av1"}}
"""The output codecs (the workers' encode) each container takes (FFmpeg 5.1 writes no AV1 into MOV)."""
DISPOSITIONS: dict[str, frozenset[str]] = {
    "mp4": frozenset(
        {"default", "dub", "comment", "forced", "hearing_impaired", "visual_impaired", "captions",
         "descriptions"}
    ),
    "mov": frozenset({"default"}),
    "mkv": frozenset(
        {"default", "dub", "original", "comment", "forced", "hearing_impaired", "visual_impaired"}
    ),
}  # fmt: skip
"""Track flags each container keeps (FFmpeg 5.1 writes them and reads them back)."""
KNOWN_DISPOSITIONS = (
    "default", "dub", "original", "comment", "lyrics", "karaoke", "forced", "hearing_impaired",
    "visual_impaired", "clean_effects", "captions", "descriptions", "metadata", "dependent",
)  # fmt: skip
"""The flags the muxer copies explicitly (`-disposition`), by FFmpeg's names."""
MOV_LANGUAGES = frozenset(
    {"eng", "fra", "ger", "spa", "ita", "por", "dut", "nor", "dan", "fin", "pol", "ces", "slk", "hun",
     "ron", "bul", "rus", "ukr", "gre", "tur", "ara", "heb", "per", "hin", "ben", "tam", "tel", "urd",
     "jpn", "kor", "chi", "tha", "vie", "ind", "may", "tgl", "cat", "baq", "slv", "est", "lav", "lit",
     "mlt"}
)  # fmt: skip
"""Languages MOV (QuickTime's own codes) keeps, of 63 common ones measured; `deu`, `swe`, `zho`… it drops."""


class StreamUnsupportedError(InfiniteFlowError):
    """No container we write carries a stream bit-exact (permanent: the job is refused at ingest)."""

    code = "E_STREAM_UNSUPPORTED"


@dataclass(frozen=True)
class Track:
    """One audio or subtitle stream of the source, as the decision sees it."""

    index: int
    kind: Literal["audio", "subtitle"]
    codec: str
    language: str | None = None
    title: str | None = None
    dispositions: frozenset[str] = frozenset()
    end_trimmed: bool = False  # its source drops samples at its end (`discard_padding`, set by ingest)

    def describe(self) -> str:
        """`audio stream #1 (pcm_f32be, fra)`: how a message names it."""
        trim = "trimmed at its end" if self.end_trimmed else None
        detail = ", ".join(x for x in (self.codec, self.language, trim) if x)
        return f"{self.kind} stream #{self.index} ({detail})"


@dataclass(frozen=True)
class StreamPlan:
    """The decision: the container, why it and not MP4, and what (if anything) it cannot keep."""

    container: Container
    reason: str
    losses: tuple[str, ...] = ()

    @property
    def extension(self) -> str:
        """The output key's file extension, with its dot."""
        return "." + self.container


def tracks_of(streams: Iterable[Mapping[str, Any]]) -> list[Track]:
    """The audio and subtitle streams of ffprobe's `-show_streams` list (video, data, attachments out)."""
    tracks: list[Track] = []
    for stream in streams:
        kind = stream.get("codec_type")
        if kind not in ("audio", "subtitle"):
            continue
        tags = {str(k).lower(): str(v) for k, v in (stream.get("tags") or {}).items()}
        flags = stream.get("disposition") or {}
        tracks.append(
            Track(
                index=int(stream.get("index", len(tracks))),
                kind=kind,
                codec=str(stream.get("codec_name") or "unknown"),
                language=None if tags.get("language") in (None, "", "und") else tags["language"],
                title=tags.get("title") or None,
                dispositions=frozenset(name for name in KNOWN_DISPOSITIONS if flags.get(name)),
                end_trimmed=bool(stream.get("discard_padding")),
            )
        )
    return tracks


def carries(container: Container, track: Track) -> bool:
    """Whether `container` takes the track's data untouched (text subtitles: converted word for word)."""
    if track.kind == "audio":
        if track.end_trimmed and container != "mkv":
            return False  # the trim is written but not played back (module doc)
        if container == "mp4":
            return track.codec in MP4_AUDIO
        if container == "mov":
            return track.codec in MOV_AUDIO or track.codec.startswith("pcm_")
        return track.codec in MKV_AUDIO
    if container == "mkv":
        return track.codec in MKV_SUBTITLES
    return track.codec in TEXT_SUBTITLES


def losses(container: Container, track: Track) -> list[str]:
    """What of the track's tags and flags `container` would drop (empty: it keeps them all)."""
    lost = []
    if track.title and container != "mkv":
        lost.append(f"title {track.title!r}")
    if container == "mov" and track.language and track.language not in MOV_LANGUAGES:
        lost.append(f"language {track.language}")
    dropped = sorted(track.dispositions - DISPOSITIONS[container])
    if dropped:
        lost.append("flag " + "+".join(dropped))
    return [f"{track.describe()}: {what}" for what in lost]


def plan_streams(streams: Iterable[Mapping[str, Any]], *, video_codec: str, rotation: int = 0) -> StreamPlan:
    """Choose the output container for the source's `streams` (ffprobe's list); refuse what none carries.

    `video_codec` is the output's codec (our name: h264, h265, av1); `rotation` the source's display
    rotation in degrees (Matroska cannot carry it).
    """
    tracks = tracks_of(streams)
    rotated = rotation % 360 != 0
    usable = [
        c
        for c in PREFERENCE
        if video_codec in VIDEO[c] and not (c == "mkv" and rotated) and all(carries(c, t) for t in tracks)
    ]
    if not usable:
        raise StreamUnsupportedError(_refusal(tracks, video_codec, rotated))
    chosen = next((c for c in usable if not any(losses(c, t) for t in tracks)), usable[0])
    lost = tuple(item for t in tracks for item in losses(chosen, t))
    return StreamPlan(chosen, _reason(chosen, tracks), lost)


def _reason(container: Container, tracks: list[Track]) -> str:
    if container == "mp4":
        return "MP4 carries every audio and subtitle stream"
    misfits = [t.describe() for t in tracks if not carries("mp4", t)]
    if misfits:
        return f"{NAMES[container]}: MP4 cannot carry {', '.join(misfits)} bit-exact"
    return f"{NAMES[container]}: it keeps the tracks' titles, languages and flags, which MP4 would drop"


def _refusal(tracks: list[Track], video_codec: str, rotated: bool) -> str:
    if not any(video_codec in VIDEO[c] for c in PREFERENCE):
        return f"no output container takes the video codec {video_codec}; choose h264, h265 or av1"
    offered = [c for c in PREFERENCE if not (c == "mkv" and rotated)]
    nowhere = [t.describe() for t in tracks if not any(carries(c, t) for c in offered)]
    fix = (
        "; convert that stream (e.g. audio to FLAC or PCM s24le, subtitles to SRT) or remove it, "
        "and upload again"
    )
    if nowhere:
        rotation_note = " (Matroska is out: it cannot carry the video's rotation)" if rotated else ""
        return (
            f"{', '.join(nowhere)} cannot be carried bit-exact by any output container we write "
            f"({', '.join(NAMES[c] for c in offered)}){rotation_note}" + fix
        )
    fits = {
        t.describe(): [NAMES[c] for c in offered if carries(c, t)] for t in tracks
    }  # every stream fits somewhere, but no one container takes them all
    detail = "; ".join(f"{name} only in {' or '.join(where)}" for name, where in fits.items())
    note = " (Matroska is out: it cannot carry the video's rotation)" if rotated else ""
    return f"no one output container carries all streams together{note}: {detail}" + fix
