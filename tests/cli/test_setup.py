"""`orpheus setup` against the fake cloud, through the real client libraries."""

from __future__ import annotations

import grpc
import pytest

PROJECT = "test-project"
BUCKET = f"orpheus-models-{PROJECT}"
SECRET = "orpheus-api-key"
BACKEND_SA = f"orpheus-backend@{PROJECT}.iam.gserviceaccount.com"
FRONTEND_SA = f"orpheus-frontend@{PROJECT}.iam.gserviceaccount.com"
API_KEY = "given-key-0123456789-abcdefXYZ"
REQUIRED_APIS = {"run.googleapis.com", "artifactregistry.googleapis.com",
                 "cloudbuild.googleapis.com", "secretmanager.googleapis.com",
                 "storage.googleapis.com", "compute.googleapis.com", "iam.googleapis.com",
                 # read by `orpheus doctor`
                 "cloudresourcemanager.googleapis.com", "cloudbilling.googleapis.com",
                 "cloudquotas.googleapis.com", "orgpolicy.googleapis.com",
                 "logging.googleapis.com"}


@pytest.fixture
def cloud(fake_cloud):
    # As on a new project: every API but Service Usage is off until setup enables it.
    fake_cloud.enforce_apis = True
    return fake_cloud


def _mutation_summary(cloud) -> list[tuple[str, str]]:
    out = []
    for call in cloud.mutating_calls():
        request = call.request
        if call.service == "storage":
            out.append(("storage", call.method))
        elif call.method == "BatchEnableServices":
            out.append((call.method, ",".join(sorted(request.service_ids))))
        elif call.method == "CreateServiceAccount":
            out.append((call.method, request.account_id))
        elif call.method == "CreateRepository":
            out.append((call.method, f"{request.parent}/{request.repository_id}"))
        elif call.method == "CreateSecret":
            out.append((call.method, request.secret_id))
        elif call.method in ("AddSecretVersion",):
            out.append((call.method, request.parent))
        elif call.method == "SetIamPolicy":
            out.append((call.method, request.resource))
        else:
            out.append((call.method, ""))
    return out


def test_setup_creates_exactly_the_expected_resources(cloud, run_cli):
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output

    assert sorted(_mutation_summary(cloud)) == sorted([
        ("BatchEnableServices", ",".join(sorted(REQUIRED_APIS))),
        ("CreateServiceAccount", "orpheus-backend"),
        ("CreateServiceAccount", "orpheus-frontend"),
        ("storage", "POST /storage/v1/b"),
        ("storage", f"PUT /storage/v1/b/{BUCKET}/iam"),
        ("CreateRepository", f"projects/{PROJECT}/locations/us-central1/orpheus-repo"),
        ("CreateSecret", SECRET),
        ("AddSecretVersion", f"projects/{PROJECT}/secrets/{SECRET}"),
        ("SetIamPolicy", f"projects/{PROJECT}/secrets/{SECRET}"),
    ])
    # The APIs were enabled by a long-running operation that setup waited for.
    assert cloud.calls("GetOperation")
    assert not cloud.operations.pending()
    assert cloud.services["serviceusage"].enabled >= REQUIRED_APIS

    bucket = cloud.storage.bucket_metadata(BUCKET)
    assert bucket["location"] == "US-CENTRAL1"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    create = next(c for c in cloud.calls("POST /storage/v1/b"))
    assert create.request.body["name"] == BUCKET

    repo = cloud.services["artifactregistry"].repositories[
        f"projects/{PROJECT}/locations/us-central1/repositories/orpheus-repo"]
    assert repo.format_.name == "DOCKER"
    assert set(cloud.services["iam"].accounts) == {BACKEND_SA, FRONTEND_SA}
    assert cloud.services["secretmanager"].payloads(SECRET) == [API_KEY.encode()]


def test_least_privilege_bindings(cloud, run_cli):
    assert run_cli("setup", "--api-key", API_KEY).exit_code == 0
    bucket_policy = cloud.storage.storage.get_bucket_iam_policy(BUCKET)
    readers = {m for b in bucket_policy["bindings"] if b["role"] == "roles/storage.objectViewer"
               for m in b["members"]}
    assert readers == {f"serviceAccount:{BACKEND_SA}"}
    all_bucket_members = {m for b in bucket_policy["bindings"] for m in b["members"]}
    assert f"serviceAccount:{FRONTEND_SA}" not in all_bucket_members

    secret_name = f"projects/{cloud.project_number}/secrets/{SECRET}"
    assert cloud.iam.members(secret_name, "roles/secretmanager.secretAccessor") == {
        f"serviceAccount:{FRONTEND_SA}"}
    # Nothing was granted project-wide.
    assert not cloud.calls("SetIamPolicy", service="resourcemanager.v3.Projects")


def test_second_run_changes_nothing_and_says_so(cloud, run_cli):
    assert run_cli("setup", "--api-key", API_KEY).exit_code == 0
    cloud.clear_log()

    again = run_cli("setup", "--api-key", "another-key-0123456789-abcdef")
    assert again.exit_code == 0, again.output
    assert cloud.mutating_calls() == []
    assert cloud.log, "the second run must still read the cloud"
    assert "Nothing to change" in again.output
    assert "--rotate-key" in again.output  # the given key was not silently dropped
    assert cloud.services["secretmanager"].payloads(SECRET) == [API_KEY.encode()]


def test_json_output_is_one_object(cloud, run_cli):
    import json

    result = run_cli("--json", "setup", "--api-key", API_KEY)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["phase"] == "setup" and data["changed"] is True
    keys = {r["key"] for r in data["results"]}
    assert keys >= {"secret/orpheus-api-key", "registry/orpheus-repo"}
    again = json.loads(run_cli("--json", "setup", "--api-key", API_KEY).stdout)
    assert again["changed"] is False


def test_rotate_key_adds_a_version_and_destroys_the_old_one(cloud, run_cli):
    assert run_cli("setup", "--api-key", API_KEY).exit_code == 0
    new_key = "rotated-key-0123456789-abcdef"
    result = run_cli("setup", "--rotate-key", "--api-key", new_key)
    assert result.exit_code == 0, result.output
    # The old key is gone from every version (destroyed: no payload left), not just superseded.
    assert cloud.services["secretmanager"].payloads(SECRET) == [b"", new_key.encode()]


def test_api_key_from_stdin(cloud, run_cli):
    result = run_cli("setup", "--api-key", "-", input=API_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert cloud.services["secretmanager"].payloads(SECRET) == [API_KEY.encode()]


def test_generated_key_is_strong_stored_and_shown_once(cloud, run_cli):
    result = run_cli("setup")
    assert result.exit_code == 0, result.output
    [stored] = cloud.services["secretmanager"].payloads(SECRET)
    key = stored.decode()
    assert len(key) >= 40
    assert result.everything.count(key) == 1
    # A second run does not generate (or show) another key.
    again = run_cli("setup")
    assert again.exit_code == 0
    assert cloud.services["secretmanager"].payloads(SECRET) == [stored]
    assert "API key" not in again.stdout


@pytest.mark.parametrize("method", [
    "google.cloud.secretmanager.v1.SecretManagerService/AddSecretVersion",
    "google.api.serviceusage.v1.ServiceUsage/BatchEnableServices",
    "google.longrunning.Operations/GetOperation",
    "google.iam.admin.v1.IAM/CreateServiceAccount",
])
def test_one_unavailable_is_retried(cloud, run_cli, method):
    cloud.fail_next(method, grpc.StatusCode.UNAVAILABLE, times=1)
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    failed = [c for c in cloud.log if c.code == "UNAVAILABLE"]
    assert len(failed) == 1
    assert cloud.services["secretmanager"].payloads(SECRET) == [API_KEY.encode()]
    assert cloud.services["serviceusage"].enabled >= REQUIRED_APIS


def test_storage_503_once_is_retried(cloud, run_cli):
    cloud.storage.fail("POST", "/storage/v1/b", status=503, times=1)
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    assert cloud.storage.bucket_metadata(BUCKET) is not None


def test_permission_denied_names_the_permission(cloud, run_cli):
    cloud.deny("secretmanager.secrets.create")
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 5
    assert "secretmanager.secrets.create" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()[-1]) < 400


def test_verbose_shows_traceback(cloud, run_cli):
    cloud.deny("iam.serviceAccounts.create")
    result = run_cli("-v", "setup", "--api-key", API_KEY)
    assert result.exit_code == 5
    assert "Traceback" in result.stderr
    assert "iam.serviceAccounts.create" in result.stderr


def test_quota_exceeded_is_explained(cloud, run_cli):
    cloud.fail_next("CreateRepository", grpc.StatusCode.RESOURCE_EXHAUSTED, times=None,
                    message="Quota exceeded for quota metric 'Repositories'")
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 7
    assert "quota" in result.stderr.lower() and "console.cloud.google.com" in result.stderr


def test_iam_etag_conflict_is_retried(cloud, run_cli):
    cloud.fail_next("SecretManagerService/SetIamPolicy", grpc.StatusCode.ABORTED, times=1)
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    secret_name = f"projects/{cloud.project_number}/secrets/{SECRET}"
    assert cloud.iam.members(secret_name, "roles/secretmanager.secretAccessor") == {
        f"serviceAccount:{FRONTEND_SA}"}


def test_concurrent_create_already_exists_is_fine(cloud, run_cli):
    fake = cloud.services["iam"]
    # Another run creates the account between our read and our create.
    cloud.before("CreateServiceAccount", lambda request: fake.create_service_account(
        request, None))
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    assert [c.code for c in cloud.calls("CreateServiceAccount")].count("ALREADY_EXISTS") == 1
    assert set(fake.accounts) == {BACKEND_SA, FRONTEND_SA}


def test_bad_api_key_is_refused_before_any_call(cloud, run_cli):
    for bad in ("tooSh0rtK3y", "has spaces in it 0123456789", "a,b-0123456789abcdefgh"):
        result = run_cli("setup", "--api-key", bad)
        assert result.exit_code == 2
        assert bad not in result.everything
    assert cloud.log == []


def test_missing_project_is_a_clear_error(cloud, run_cli, monkeypatch):
    monkeypatch.delenv("ORPHEUS_PROJECT")
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 2
    assert "--project" in result.stderr


def test_name_and_region_select_other_resources(cloud, run_cli, monkeypatch):
    monkeypatch.setenv("ORPHEUS_NAME", "tts2")
    result = run_cli("--region", "europe-west4", "setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    assert cloud.storage.bucket_metadata(f"tts2-models-{PROJECT}")["location"] == "EUROPE-WEST4"
    assert cloud.storage.bucket_metadata(BUCKET) is None
    assert list(cloud.services["artifactregistry"].repositories) == [
        f"projects/{PROJECT}/locations/europe-west4/repositories/tts2-repo"]
    assert set(cloud.services["iam"].accounts) == {
        f"tts2-backend@{PROJECT}.iam.gserviceaccount.com",
        f"tts2-frontend@{PROJECT}.iam.gserviceaccount.com"}
    assert cloud.services["secretmanager"].payloads("tts2-api-key") == [API_KEY.encode()]


def test_drifted_bucket_is_repaired(cloud, run_cli):
    assert run_cli("setup", "--api-key", API_KEY).exit_code == 0
    bucket = cloud.storage.bucket_metadata(BUCKET)
    bucket["iamConfiguration"]["publicAccessPrevention"] = "inherited"
    cloud.clear_log()
    result = run_cli("setup")
    assert result.exit_code == 0, result.output
    assert [c.method for c in cloud.mutating_calls()] == [f"PATCH /storage/v1/b/{BUCKET}"]
    assert cloud.storage.bucket_metadata(BUCKET)["iamConfiguration"][
        "publicAccessPrevention"] == "enforced"


def test_json_error_shape(cloud, run_cli):
    import json

    cloud.deny("artifactregistry.repositories.create")
    result = run_cli("--json", "setup", "--api-key", API_KEY)
    assert result.exit_code == 5
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "permission" and error["exit_code"] == 5
    assert "artifactregistry.repositories.create" in error["message"]


def test_new_service_accounts_not_yet_visible_to_iam_are_waited_for(cloud, run_cli):
    # Creating a service account is eventually consistent: for some seconds after
    # CreateServiceAccount, a policy naming it is refused with 400 / INVALID_ARGUMENT
    # "Service account ... does not exist." (Cloud Storage and Secret Manager alike).
    cloud.storage.fail("PUT", f"/b/{BUCKET}/iam", status=400, times=2,
                       message=f"Service account {BACKEND_SA} does not exist.")
    cloud.fail_next("SecretManagerService/SetIamPolicy", grpc.StatusCode.INVALID_ARGUMENT,
                    times=2, message=f"Service account {FRONTEND_SA} does not exist.")

    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output

    bucket_policy = cloud.storage.storage.get_bucket_iam_policy(BUCKET)
    assert f"serviceAccount:{BACKEND_SA}" in {
        m for b in bucket_policy["bindings"] if b["role"] == "roles/storage.objectViewer"
        for m in b["members"]}
    secret_name = f"projects/{cloud.project_number}/secrets/{SECRET}"
    assert cloud.iam.members(secret_name, "roles/secretmanager.secretAccessor") == {
        f"serviceAccount:{FRONTEND_SA}"}
    assert len(cloud.calls("SetIamPolicy", service="SecretManagerService")) == 3


def test_a_service_account_that_never_appears_still_fails(cloud, run_cli):
    cloud.fail_next("SecretManagerService/SetIamPolicy", grpc.StatusCode.INVALID_ARGUMENT,
                    times=None, message=f"Service account {FRONTEND_SA} does not exist.")

    result = run_cli("setup", "--api-key", API_KEY, env={"ORPHEUS_RETRY_DEADLINE_S": "0.2"})
    assert result.exit_code != 0
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output


def iam_disabled_fault(cloud, times):
    # Google's wording and ErrorInfo for an API that is off, or was enabled moments ago.
    cloud.fail_next(
        "CreateServiceAccount", grpc.StatusCode.PERMISSION_DENIED, times=times,
        message=f"Identity and Access Management (IAM) API has not been used in project {PROJECT} "
                "before or it is disabled. Enable it by visiting https://console.developers."
                f"google.com/apis/api/iam.googleapis.com/overview?project={PROJECT} then retry. "
                "If you enabled this API recently, wait a few minutes for the action to "
                "propagate to our systems and retry.",
        reason="SERVICE_DISABLED",
        metadata={"service": "iam.googleapis.com", "consumer": f"projects/{PROJECT}"})


def test_apis_enabled_by_this_run_are_given_time_to_propagate(cloud, run_cli):
    # The enable operation is done before every API's front end knows: the next calls may
    # still answer SERVICE_DISABLED for a while.
    iam_disabled_fault(cloud, times=2)
    result = run_cli("setup", "--api-key", API_KEY)
    assert result.exit_code == 0, result.output
    assert set(cloud.services["iam"].accounts) == {BACKEND_SA, FRONTEND_SA}
    assert len(cloud.calls("CreateServiceAccount")) == 4


def test_an_api_disabled_while_setup_enabled_nothing_fails_at_once(cloud, run_cli):
    assert run_cli("setup", "--api-key", API_KEY).exit_code == 0
    cloud.services["iam"].accounts.clear()
    cloud.clear_log()
    iam_disabled_fault(cloud, times=None)
    result = run_cli("setup")
    assert result.exit_code != 0
    assert "iam.googleapis.com API is disabled" in result.stderr
    assert len(cloud.calls("CreateServiceAccount")) == 1
