"""A case in the Temporal Web UI, seen in headless Chromium the way a responder sees it:
found by its search attributes, read from its summary, details and current details with
its history telling the playbook, and approved with the UI's Send a Signal.

Selenium blocks, so each look runs in a thread: the worker on the test's event loop keeps
answering the UI's metadata query, which is where current details come from.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest
import pytest_asyncio
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from config import names
from config.settings import Settings
from models.case import ActionStatus, ApprovalInput, Phase
from models.finding import Finding
from tests.support import ACCOUNT, finding
from tests.web_ui.conftest import WebUi
from tests.workflows.test_case_workflow import FakeAws, _pending, _wait_for
from webhook.intake import submit_finding
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.browser

# Generous for two busy cores; every wait ends as soon as its condition holds.
WAIT_SECONDS = 30
# The case approved from the UI is in another account, so the filter test's view of
# ACCOUNT is the same whichever test runs first.
OTHER_ACCOUNT = "210987654321"
CONTAIN = "contain-1"


@dataclass
class Case:
    handle: WorkflowHandle
    finding: Finding

    @property
    def id(self) -> str:
        return self.handle.id

    @property
    def access_key_id(self) -> str:
        return self.finding.access_key.access_key_id


@dataclass
class Cases:
    waiting: Case  # awaiting approval of its containment
    closed: Case  # its containment rejected, in the same account
    to_approve: Case  # awaiting approval, in OTHER_ACCOUNT


def _in_phase(phase: Phase, account_id: str = ACCOUNT) -> str:
    """A list query of the README's kind: every case in one phase in one account."""
    return (
        f"{names.SA_PHASE.name} = '{phase.value}' AND {names.SA_ACCOUNT_ID.name} = '{account_id}'"
    )


@pytest_asyncio.fixture(scope="module")
async def cases(web_ui: WebUi) -> AsyncIterator[Cases]:
    """Cases opened the way the webhook opens them (with their static summary and
    details), on fake AWS, each waiting for approval of its containment; one is rejected."""
    client = web_ui.env.client
    queue = f"web-ui-{uuid.uuid4()}"
    settings = Settings(_env_file=None, task_queue=queue, scan_task_queue=queue)
    fake = FakeAws()
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=fake.activities()):
        waiting, closed, to_approve = [
            await _open(client, settings, finding(account_id=account, access_key_id=_key()))
            for account in (ACCOUNT, ACCOUNT, OTHER_ACCOUNT)
        ]
        for case in (waiting, closed, to_approve):
            await _wait_for(case.handle, _pending(CONTAIN))
        await closed.handle.execute_update(
            CaseWorkflow.reject_action,
            ApprovalInput(action_id=CONTAIN, approver="bob", reason="a known pentest"),
        )
        await _wait_for(closed.handle, lambda s: s.phase is Phase.CLOSED)
        # The UI lists what visibility has indexed: wait for it here, so a slow index
        # cannot pass for a filter that finds nothing.
        await _until_listed(client, _in_phase(Phase.AWAITING_APPROVAL), waiting.id)
        await _until_listed(client, _in_phase(Phase.CLOSED), closed.id)
        yield Cases(waiting=waiting, closed=closed, to_approve=to_approve)
        for case in (waiting, to_approve):
            await case.handle.terminate("test over")


def _key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


async def _open(client: Client, settings: Settings, opening: Finding) -> Case:
    result = await submit_finding(client, settings, opening)
    assert result.case_id is not None
    return Case(handle=client.get_workflow_handle(result.case_id), finding=opening)


async def _until_listed(client: Client, query: str, workflow_id: str) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            if workflow_id in [w.id async for w in client.list_workflows(query)]:
                return
            await asyncio.sleep(0.2)


def _wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException])


def _shown(by: str, selector: str) -> Callable[[WebDriver], WebElement | Literal[False]]:
    """The first match a person could click: the UI keeps hidden copies of some menus
    and dialogs (for narrow screens), under the same test ids."""

    def condition(driver: WebDriver) -> WebElement | Literal[False]:
        return next(
            (e for e in driver.find_elements(by, selector) if e.is_displayed() and e.is_enabled()),
            False,
        )

    return condition


def _click(driver: WebDriver, by: str, selector: str) -> None:
    _wait(driver).until(_shown(by, selector)).click()


def _page_shows(driver: WebDriver, text: str) -> None:
    _wait(driver).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), text))


def _listed_cases(driver: WebDriver, web_ui: WebUi, query: str) -> set[str]:
    """The case ids the workflows list shows for a query in its filter (from the URL, as
    a bookmarked or shared filter opens)."""
    driver.get(f"{web_ui.workflows_url()}?query={quote(query)}")

    def rows(d: WebDriver) -> set[str] | Literal[False]:
        prefix = f"{names.CASE_WORKFLOW_ID_PREFIX}-"
        shown = {a.text for a in d.find_elements(By.TAG_NAME, "a") if a.text.startswith(prefix)}
        return shown or False

    return _wait(driver).until(rows)


def _open_case(driver: WebDriver, web_ui: WebUi, case: Case, tab: str) -> None:
    """The case's page, on one of its tabs (timeline, history, user-metadata...)."""
    driver.get(f"{web_ui.workflows_url()}/{case.id}")
    _click(driver, By.CSS_SELECTOR, f"[data-testid='{tab}-tab']")


def _frame_text(driver: WebDriver, frame_id: str, expected: str) -> str:
    """The text of a Markdown block, which the UI renders in a frame of its own, once it
    shows `expected`."""
    wait = _wait(driver)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.ID, frame_id)))
    try:
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), expected))
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.switch_to.default_content()


def _find_by_phase(driver: WebDriver, web_ui: WebUi, cases: Cases) -> None:
    assert _listed_cases(driver, web_ui, _in_phase(Phase.AWAITING_APPROVAL)) == {cases.waiting.id}
    assert _listed_cases(driver, web_ui, _in_phase(Phase.CLOSED)) == {cases.closed.id}


def _read_the_case(driver: WebDriver, web_ui: WebUi, case: Case, screenshot: Path) -> None:
    _listed_cases(driver, web_ui, _in_phase(Phase.AWAITING_APPROVAL))
    _click(driver, By.LINK_TEXT, case.id)
    # The case opens on its timeline, where each activity shows its summary.
    _page_shows(driver, "Resolve the principal behind the access key")

    _click(driver, By.CSS_SELECTOR, "[data-testid='user-metadata-tab']")
    summary = _frame_text(driver, "user-metadata-summary", case.access_key_id)
    assert summary.strip() == f"{case.finding.type} on {case.access_key_id}"
    details = _frame_text(driver, "user-metadata-details", "Credential")
    assert f"Credential {case.access_key_id} of AssumedRole web-app-role" in details
    current = _frame_text(driver, "user-metadata-current-details", "Waiting for approval")
    assert f"Phase: {Phase.AWAITING_APPROVAL.value}" in current
    assert (
        f"temporal workflow update execute --workflow-id {case.id} "
        f'--name {names.UPDATE_APPROVE} --input \'{{"action_id": "{CONTAIN}"'
    ) in current
    assert (
        f"temporal workflow signal --workflow-id {case.id} "
        f'--name {names.SIGNAL_APPROVE} --input \'{{"action_id": "{CONTAIN}"'
    ) in current
    driver.save_screenshot(str(screenshot))

    # Newest first: the last activity before the approval, with its summary.
    _click(driver, By.CSS_SELECTOR, "[data-testid='history-tab']")
    _page_shows(driver, "Capture every trail's settings, status and event selectors")


def _send_approve_signal(
    driver: WebDriver, web_ui: WebUi, case: Case, decision: ApprovalInput, screenshot: Path
) -> None:
    """More Actions, Send a Signal, `approve`, the decision as JSON, Submit."""
    _open_case(driver, web_ui, case, "timeline")
    _click(driver, By.XPATH, "//button[contains(., 'More Actions')]")
    _click(driver, By.CSS_SELECTOR, "[data-testid='signal-button']")
    _click(driver, By.CSS_SELECTOR, "[data-testid='signal-select-button']")
    _click(driver, By.XPATH, f"//li[@role='option'][normalize-space()='{names.SIGNAL_APPROVE}']")
    editor = _wait(driver).until(_shown(By.CSS_SELECTOR, "dialog[open] .cm-content"))
    editor.click()
    # The editor closes brackets and quotes as they open; typing the closing one steps
    # over it, so what it holds is exactly what was typed.
    # As a person types it: the fields they decide (an unsigned decision has no signature).
    typed = decision.model_dump_json(exclude_none=True)
    editor.send_keys(typed)
    _wait(driver).until(lambda d: editor.text == typed)
    driver.save_screenshot(str(screenshot))
    _click(driver, By.CSS_SELECTOR, "dialog[open] [data-testid='confirm-modal-button']")
    _wait(driver).until_not(_shown(By.CSS_SELECTOR, "dialog[open]"))


def _see_it_move_on(driver: WebDriver, web_ui: WebUi, case: Case, screenshot: Path) -> None:
    _open_case(driver, web_ui, case, "user-metadata")
    current = _frame_text(driver, "user-metadata-current-details", f"Phase: {Phase.WATCHING.value}")
    assert f"Phase: {Phase.WATCHING.value}" in current
    assert f"{CONTAIN}: {ActionStatus.DONE.value}" in current
    assert "Waiting for approval" not in current
    driver.save_screenshot(str(screenshot))
    _click(driver, By.CSS_SELECTOR, "[data-testid='history-tab']")
    _page_shows(driver, "Workflow Execution Signaled")


async def test_the_phase_filter_finds_the_case_awaiting_approval_and_no_other(
    browser, web_ui, cases
):
    await asyncio.to_thread(_find_by_phase, browser, web_ui, cases)


async def test_the_case_page_shows_its_summary_current_details_and_history(
    browser, web_ui, cases, artifacts
):
    # Temporal holds the case encrypted: a client without the keys sees ciphertext only...
    plain = await Client.connect(web_ui.env.client.service_client.config.target_host)
    history = await plain.get_workflow_handle(cases.waiting.id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (stored,) = started.input.payloads
    assert stored.metadata["encoding"] == b"binary/encrypted"
    assert cases.waiting.finding.id.encode() not in stored.data
    # ...and the page below reads its summary, details and history through the codec server.
    screenshot = artifacts / "case-details.png"
    await asyncio.to_thread(_read_the_case, browser, web_ui, cases.waiting, screenshot)
    assert screenshot.stat().st_size > 0


async def test_an_approval_sent_from_the_web_ui_moves_the_case_on(
    browser, web_ui, cases, artifacts
):
    case = cases.to_approve
    decision = ApprovalInput(action_id=CONTAIN, approver="alice@example.com", reason="seen it")
    await asyncio.to_thread(
        _send_approve_signal, browser, web_ui, case, decision, artifacts / "approve-signal.png"
    )

    status = await _wait_for(case.handle, lambda s: s.phase is Phase.WATCHING)
    contain = next(a for a in status.actions if a.id == CONTAIN)
    assert contain.approval is not None
    assert (contain.approval.approver, contain.approval.reason) == ("alice@example.com", "seen it")
    await asyncio.to_thread(
        _see_it_move_on, browser, web_ui, case, artifacts / "case-after-approval.png"
    )
