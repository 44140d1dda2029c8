# What a command objective's program may receive and see (studies/objectives/
# command_space.py, sandbox.py): staff opt in to unsafe string choices, and name
# the worker's variables the program also sees. Depends on both 0003 migrations,
# so it also merges them.

import studies.models
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0003_api_tokens"),
        ("studies", "0003_job_slot_waiting"),
    ]

    operations = [
        migrations.AddField(
            model_name="commandobjective",
            name="pass_environment",
            field=studies.models.JSONTextField(
                blank=True,
                default=list,
                help_text="Variables of the worker's environment the program also sees, beyond "
                'HUB_COMMAND_ENV_ALLOWLIST: a JSON list of NAME or PREFIX*, e.g. ["WANDB_API_KEY"].',
            ),
        ),
        migrations.AddField(
            model_name="commandobjective",
            name="allow_unsafe_strings",
            field=models.BooleanField(
                default=False,
                help_text="Allow string choices that begin with '-' or are paths with '..' or "
                "absolute ones; studies still get only the choices registered here.",
            ),
        ),
    ]
