"""Fake Resource Manager v3: the project and its IAM policy (for project-level bindings)."""

from __future__ import annotations

from typing import Any

from google.cloud import resourcemanager_v3

from tests.fakecloud.core import FakeService, rpc


class ProjectsFake(FakeService):
    client = ("google.cloud.resourcemanager_v3", "ProjectsClient")
    key = "projects"
    api = "cloudresourcemanager.googleapis.com"

    @rpc("resourcemanager.projects.get")
    def get_project(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        return resourcemanager_v3.Project(
            name=f"projects/{self.cloud.project_number}", project_id=self.cloud.project,
            state=resourcemanager_v3.Project.State.ACTIVE)

    @rpc("resourcemanager.projects.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        self.check_project(request.resource)
        return self.cloud.iam.get(f"projects/{self.cloud.project}")

    @rpc("resourcemanager.projects.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        self.check_project(request.resource)
        return self.cloud.iam.set(f"projects/{self.cloud.project}", request.policy,
                                  self.cloud.validate_member)


SERVICES = [ProjectsFake]
