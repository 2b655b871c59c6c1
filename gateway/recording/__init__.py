"""Call recordings (`RECORDING=gateway`): what the caller heard, in stereo, stored where RECORDINGS_URL says.

- `timeline`: the rules, pure: where each side's audio goes on the caller's clock.
- `recorder`: one call's recording as it happens (a line that tells it what crosses, an encoder thread).
- `storage`: a local directory or S3-compatible object storage.
- `recordings`: what every call's recording shares (the storage, the notice, stores in flight, retention).
- `retention`: which recordings are older than RECORDING_RETENTION_DAYS, and the job that deletes them.
"""
