"""Household keys: the hub identity, owner device identities, and the signed recipient roster.

Who holds what:
- The **hub** holds one Ed25519 signing key (`DATA/keys/hub.key`, mode 0600). It signs clip
  headers and trailers. It holds **no** key that decrypts a finished clip: clip keys are
  wrapped for devices with SealedBox and forgotten, so a stolen hub reads nothing old. Its
  separate X25519 box key (`DATA/keys/hub-box.key`) opens only the outer seal of keys an owner
  releases to a requester; what is inside is sealed to the requester.
- **Requesters** the owners vouch for are listed in the roster under `requesters`, each with
  the role the owners gave it; they receive no clips.
- An **owner device** (phone, laptop) holds an Ed25519 signing seed (to sign rosters and
  approvals) and an X25519 box secret (to unwrap clip keys). `owner keygen` writes both to a
  0600 file and the public halves to `FILE.pub`.
- The **roster** is the owner-signed list of devices that receive clips. It carries a version
  counter; the hub refuses a roster whose version went backwards, and once a roster is installed
  only a device that is an owner in the installed roster may sign the next one. Revoking a
  device removes it from the roster and lists its key id under `revoked`, so new clips exclude
  it.

Encodings (all canonical; see docs/envelope-spec.md "Keys"):
- device public value  `epa1pub:` base64url-nopad(sign_pk[32] || box_pk[32] || name utf-8)
- device secret value  `epa1sec:` base64url-nopad(sign_seed[32] || box_sk[32] || name utf-8)
- hub public value     `epa1hub:` base64url-nopad(sign_pk[32])
- hub secret value     `epa1hubsec:` base64url-nopad(sign_seed[32])
- hub box secret       `epa1hubbox:` base64url-nopad(x25519_sk[32]) (`DATA/keys/hub-box.key`, key release)
- device key id        hex(BLAKE2b-64(sign_pk || box_pk, person="epa1-device-id"))
- hub key id           hex(BLAKE2b-64(sign_pk, person="epa1-hub-id"))

Invariants:
- Every key is validated on construction: lengths, canonical encoding, Ed25519 points that are
  valid and in the prime-order subgroup, X25519 points that are not of low order.
- Secret key files are created 0600 with O_EXCL (never overwritten) and refused on load when
  group/other have any permission bit.
- Nothing here logs key material.

Modules: `encoding` (canonical values, key ids, point checks), `identity` (keys in memory),
`files` (key files on disk), `roster` (the owner-signed roster), `epochs` (signed lists of public
epoch keys), `epochinstall` (the lists installed on the hub, `DATA/keys/epochs/`). Code outside
the package imports from `agent.crypto.keys`.
"""

from agent.crypto.keys.encoding import (
    DEVICE_PUB_PREFIX,
    DEVICE_SEC_PREFIX,
    HUB_PUB_PREFIX,
    HUB_SEC_PREFIX,
    KEY_ID_HEX_LEN,
    MAX_NAME_BYTES,
    b64url_decode,
    b64url_encode,
    canonical_json,
    check_key_id,
    device_key_id,
    hub_key_id,
    validate_ed25519_public,
    validate_x25519_public,
)
from agent.crypto.keys.epochinstall import (
    EPOCHS_DIRNAME,
    days_left,
    epoch_horizons,
    epoch_list_path,
    epochs_dir,
    install_epoch_list,
    load_epoch_lists,
)
from agent.crypto.keys.epochs import (
    DEFAULT_EPOCH_S,
    DEFAULT_HORIZON_S,
    EPOCHS_SIG_DOMAIN,
    EpochList,
    EpochRecipient,
    check_epoch_update,
    epoch_of,
    epoch_start_s,
)
from agent.crypto.keys.epochstore import (
    STORE_SUFFIX,
    EpochStore,
    ShredRecord,
    ShredResult,
    epoch_span,
    store_path,
)
from agent.crypto.keys.files import (
    HUB_BOX_FILE,
    HUB_PUBLIC_FILE,
    HUB_SECRET_FILE,
    KEYS_DIRNAME,
    hub_public,
    init_hub,
    keys_dir,
    load_device_identity,
    load_device_public,
    load_hub_identity,
    load_hub_public,
    read_secret_file,
    write_device_identity,
    write_new_file,
)
from agent.crypto.keys.identity import (
    REQUESTER_ROLES,
    ROLES,
    DeviceIdentity,
    DevicePublic,
    HubIdentity,
    HubPublic,
    Role,
)
from agent.crypto.keys.roster import (
    MAX_ROSTER_BYTES,
    MAX_ROSTER_DEVICES,
    ROSTER_FILE,
    ROSTER_SIG_DOMAIN,
    RequesterEntry,
    Roster,
    RosterEntry,
    check_roster_update,
    install_roster,
    load_roster,
    resolve_recipients,
    sign_roster,
    updated_roster,
)

__all__ = [
    "DEFAULT_EPOCH_S",
    "DEFAULT_HORIZON_S",
    "EPOCHS_DIRNAME",
    "EPOCHS_SIG_DOMAIN",
    "EpochList",
    "EpochRecipient",
    "EpochStore",
    "STORE_SUFFIX",
    "ShredRecord",
    "ShredResult",
    "check_epoch_update",
    "epoch_of",
    "epoch_span",
    "epoch_start_s",
    "store_path",
    "days_left",
    "epoch_horizons",
    "epoch_list_path",
    "epochs_dir",
    "install_epoch_list",
    "load_epoch_lists",
    "DEVICE_PUB_PREFIX",
    "DEVICE_SEC_PREFIX",
    "DeviceIdentity",
    "DevicePublic",
    "HUB_BOX_FILE",
    "HUB_PUBLIC_FILE",
    "HUB_PUB_PREFIX",
    "HUB_SECRET_FILE",
    "HUB_SEC_PREFIX",
    "HubIdentity",
    "HubPublic",
    "KEYS_DIRNAME",
    "KEY_ID_HEX_LEN",
    "MAX_NAME_BYTES",
    "MAX_ROSTER_BYTES",
    "MAX_ROSTER_DEVICES",
    "REQUESTER_ROLES",
    "ROLES",
    "ROSTER_FILE",
    "ROSTER_SIG_DOMAIN",
    "RequesterEntry",
    "Role",
    "Roster",
    "RosterEntry",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "check_key_id",
    "check_roster_update",
    "device_key_id",
    "hub_key_id",
    "hub_public",
    "init_hub",
    "install_roster",
    "keys_dir",
    "load_device_identity",
    "load_device_public",
    "load_hub_identity",
    "load_hub_public",
    "load_roster",
    "read_secret_file",
    "resolve_recipients",
    "sign_roster",
    "updated_roster",
    "validate_ed25519_public",
    "validate_x25519_public",
    "write_device_identity",
    "write_new_file",
]
