"""Jobs: follow, wait for, fetch, cancel."""

from __future__ import annotations

import builtins
import time

from pps_client._exceptions import JobFailed, JobTimeout
from pps_client._resources._base import Resource
from pps_client._types import ProgressCallback
from pps_wire.schemas import JobPublic


class Jobs(Resource):
    """A long computation (PSI, scoring, enclave jobs) runs as a job; its result is for its owner only."""

    def get(self, job_id: str) -> JobPublic:
        return self._client._call("GET", f"/v1/jobs/{job_id}", JobPublic)

    def list(self) -> builtins.list[JobPublic]:
        """My jobs (every job's metadata for admins and auditors), following the pages."""
        return self._client._pages("/v1/jobs", JobPublic)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        poll: float = 0.2,
        on_progress: ProgressCallback | None = None,
    ) -> JobPublic:
        """Poll a job until it ends; raise :class:`~pps_client.JobFailed` if it failed or was cancelled,
        :class:`~pps_client.JobTimeout` after ``timeout`` seconds."""
        if timeout <= 0 or poll <= 0:
            raise ValueError("timeout and poll must be positive (seconds)")
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state == "succeeded":
                return job
            if job.state in ("failed", "cancelled"):
                if job.error is not None:
                    raise JobFailed(job_id, job.error.code, job.error.message)
                raise JobFailed(job_id, "job_cancelled", "the job was cancelled")
            if time.monotonic() > deadline:
                raise JobTimeout(job_id, timeout)
            time.sleep(poll)

    def result(self, job_id: str) -> bytes:
        """A finished job's result, as the service stored it (see :mod:`pps_wire.frames` for its format)."""
        return self._client._bytes(f"/v1/jobs/{job_id}/result")

    def cancel(self, job_id: str) -> JobPublic:
        return self._client._call("POST", f"/v1/jobs/{job_id}/cancel", JobPublic)

    def delete_result(self, job_id: str) -> JobPublic:
        return self._client._call("DELETE", f"/v1/jobs/{job_id}/result", JobPublic)
