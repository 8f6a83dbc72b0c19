"""A tiny workflow for the codec's end-to-end test: its input and result are one note."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel


class KeepNoteInput(BaseModel):
    note: str


class KeepNoteResult(BaseModel):
    kept: str


@workflow.defn
class KeepNoteWorkflow:
    @workflow.run
    async def run(self, note: KeepNoteInput) -> KeepNoteResult:
        return KeepNoteResult(kept=note.note)
