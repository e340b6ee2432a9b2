"""Task pipelines, each a package that owns every fact about itself; `nlpcli.registry` finds one by name.

`BUILTIN` is the index of the tasks that ship with nlpcli: name -> "module:Class", read without importing
any task (and so torch), which keeps the CLI's start fast. A task in another package declares the same
as an entry point in the group `nlpcli.tasks` of its own package.
"""

BUILTIN: dict[str, str] = {
    "ner": "nlpcli.tasks.ie.ner.pipeline:NerPipeline",
    "ie": "nlpcli.tasks.ie.relation.pipeline:IePipeline",
    "qa": "nlpcli.tasks.qa.pipeline:QaPipeline",
    "lm": "nlpcli.tasks.gen.lm.pipeline:LmPipeline",
    "chat": "nlpcli.tasks.gen.chat.pipeline:ChatPipeline",
}
