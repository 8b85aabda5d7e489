"""A consumer process for the crash test: records each message it finishes, slowly, until killed.

Usage: python -m tests.integration.consumer_process TOPIC GROUP OUTFILE
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from infiniteflow_common.kafka import Delivery
from infiniteflow_common.settings import CommonSettings
from tests.integration.kafka_support import running_consumer


async def main(topic: str, group: str, out: Path) -> None:
    settings = CommonSettings()

    async def handle(delivery: Delivery) -> None:
        await asyncio.sleep(0.15)
        with out.open("a") as file:  # the handler's durable work: a line per message
            file.write(f"{os.getpid()} {delivery.offset} {delivery.value.decode()}\n")
            file.flush()
            os.fsync(file.fileno())

    async with running_consumer(settings, topic, handle, group=group, service="crash-test"):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
