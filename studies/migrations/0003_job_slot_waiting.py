# A slot can wait without a task: for its delayed start, for its user's
# running-slot limit, or for its turn (studies/jobs/fair.py); and it names the
# process that holds it, so a stopping cluster hands back its own slots.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0002_jobs_and_command_objectives"),
    ]

    operations = [
        migrations.AddField(
            model_name="jobslot",
            name="waiting",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "queued or running"),
                    ("delay", "delay"),
                    ("limit", "limit"),
                    ("turn", "turn"),
                ],
                default="",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="jobslot",
            name="start_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="jobslot",
            name="worker",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
    ]
