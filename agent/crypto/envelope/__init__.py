"""The clip envelope (format `epa-clip` v2; v1 clips still verify and open): seal, verify and open
end-to-end encrypted clips.

The byte format is specified in docs/envelope-spec.md, with vectors in tests/vectors/. In short:

    header || header_sig || chunk_record* || u32(0) || trailer

- A random clip key K per clip; the payload is `crypto_secretstream_xchacha20poly1305` in
  64 KiB chunks, every chunk authenticated with the header digest as associated data.
- Video chunks carry TAG_MESSAGE; the last chunk carries TAG_FINAL and holds the encrypted
  metadata (camera id and name, times, labels, thumbnail). A reader demands TAG_FINAL on the
  last chunk and nothing after the trailer, because secretstream itself does not notice a cut at
  a chunk boundary.
- K is wrapped per recipient with SealedBox over `"epa/v1/wrap\0" || clip_id || K`; the hub
  keeps no key that unwraps it, so a stolen hub reads no finished clip. In v2 each stanza names
  the recipient's epoch key it is sealed to (or none: the long-term box key), so a device that
  destroys an epoch secret makes every copy of that epoch's clips unopenable.
- The hub signs the header digest and a trailer digest (chunk count + hash of every chunk
  record), each with its own domain prefix. Without the trailer a holder of K could substitute
  other content under a valid header.
- Clips of one camera form a chain: each header carries the previous clip's `clip_hash`.

Invariants:
- Pure: no filesystem, no clock. Callers pass file objects. Randomness comes from libsodium
  unless a test injects `clip_key`/`clip_id` for vectors.
- Every failure is a typed `EnvelopeError`: MalformedEnvelope, TruncatedClip, TamperedClip,
  BadSignature (a TamperedClip: a signature that does not verify), WrongRecipient. Parsing
  arbitrary bytes never raises anything else.
- `open_clip` verifies signatures, structure and the ciphertext hash before it decrypts a byte,
  and checks the hash again while decrypting (the file could change between the passes).

This package's modules, by concern: `format` (layout, digests, parsed header), `verify`
(signatures and structure, no secret key), `seal` (the writer), `opening` (unwrap and decrypt),
`chain` (per-camera chain), `hashing` (chunk hashes, in line or on a thread). Code outside the package imports from `agent.crypto.envelope`.
"""

from agent.crypto.envelope.chain import (
    check_chain,
    check_heads,
    stream_id_for,
)
from agent.crypto.envelope.format import (
    ABYTES,
    CHUNK_BYTES,
    CLIP_ID_BYTES,
    EPOCH_BYTES,
    EPOCH_NONE,
    FULL_RECORD_CT,
    HASH_BYTES,
    HEADER_FIXED_BYTES,
    HEADER_SIG_DOMAIN,
    KEY_BYTES,
    KEY_ID_BYTES,
    MAGIC,
    MAX_CHUNKS,
    MAX_RECIPIENTS,
    SIG_BYTES,
    SS_HEADER_BYTES,
    STANZA_BYTES,
    STANZA_V1_BYTES,
    STREAM_ID_BYTES,
    SUPPORTED_VERSIONS,
    TAG_FINAL,
    TAG_MESSAGE,
    TRAILER_BYTES,
    TRAILER_SIG_DOMAIN,
    VERSION,
    VERSION_1,
    WRAP_LABEL,
    WRAP_PLAIN_BYTES,
    WRAP_SEALED_BYTES,
    ZERO_HASH,
    ClipInfo,
    Header,
    OpenedClip,
    Stanza,
    clip_hash_of,
    header_digest_of,
    stanza_bytes,
    trailer_digest_of,
)
from agent.crypto.envelope.opening import (
    EpochSecrets,
    decrypt_verified,
    open_clip,
    open_clip_bytes,
    unwrap_key,
)
from agent.crypto.envelope.seal import (
    ClipWriter,
    Recipient,
    seal,
    wrap_key,
)
from agent.crypto.envelope.verify import (
    verify_clip,
)

__all__ = [
    "ABYTES",
    "CHUNK_BYTES",
    "CLIP_ID_BYTES",
    "ClipInfo",
    "ClipWriter",
    "EPOCH_BYTES",
    "EPOCH_NONE",
    "EpochSecrets",
    "FULL_RECORD_CT",
    "HASH_BYTES",
    "HEADER_FIXED_BYTES",
    "HEADER_SIG_DOMAIN",
    "Header",
    "KEY_BYTES",
    "KEY_ID_BYTES",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_RECIPIENTS",
    "OpenedClip",
    "Recipient",
    "SIG_BYTES",
    "SS_HEADER_BYTES",
    "STANZA_BYTES",
    "STANZA_V1_BYTES",
    "STREAM_ID_BYTES",
    "SUPPORTED_VERSIONS",
    "Stanza",
    "TAG_FINAL",
    "TAG_MESSAGE",
    "TRAILER_BYTES",
    "TRAILER_SIG_DOMAIN",
    "VERSION",
    "VERSION_1",
    "WRAP_LABEL",
    "WRAP_PLAIN_BYTES",
    "WRAP_SEALED_BYTES",
    "ZERO_HASH",
    "check_chain",
    "check_heads",
    "clip_hash_of",
    "decrypt_verified",
    "header_digest_of",
    "open_clip",
    "open_clip_bytes",
    "seal",
    "stanza_bytes",
    "stream_id_for",
    "trailer_digest_of",
    "unwrap_key",
    "verify_clip",
    "wrap_key",
]
