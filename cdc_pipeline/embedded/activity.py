"""Shop activity for the embedded default: a job that changes the shop, and a sensor that runs it.

With `dagster dev` on the embedded code location, this is what keeps the source changing, so the
replication sensor has something to replicate and the asset plots move.
"""

import random

import dagster as dg

from cdc_pipeline.embedded.environment import SOURCE_DSN_ENV
from cdc_pipeline.embedded.shop import change_the_shop

ACTIVITY_INTERVAL_SECONDS = 20


class ShopActivityConfig(dg.Config):
    new_customers: int = 20


@dg.op(description="Sign-ups, orders, payments, shipping, an address change and cancellations at the source.")
def change_the_shop_op(context: dg.OpExecutionContext, config: ShopActivityConfig) -> None:
    dsn = dg.EnvVar(SOURCE_DSN_ENV).get_value()
    assert dsn is not None, f"${SOURCE_DSN_ENV} is set by the embedded code location"
    change_the_shop(dsn, random.Random(), config.new_customers)
    context.log.info(f"{config.new_customers} new customers with their first orders, and their follow-ups")


@dg.job(
    name="simulate_shop_activity",
    description="One round of activity in the embedded shop (the source).",
    executor_def=dg.in_process_executor,  # the location binds the in-memory IO manager
)
def simulate_shop_activity() -> None:
    change_the_shop_op()


@dg.sensor(
    job=simulate_shop_activity,
    minimum_interval_seconds=ACTIVITY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the embedded shop busy: one activity run per interval (stop it to freeze the source).",
)
def shop_activity_sensor() -> dg.RunRequest:
    return dg.RunRequest()


def activity_definitions() -> dg.Definitions:
    return dg.Definitions(jobs=[simulate_shop_activity], sensors=[shop_activity_sensor])
