"""Notifications: events recorded with the state changes they report, the subscriptions that
want them, the worker that delivers them, and the live event stream.

One module per concept:
- outbox: EventLog writes events and their deliveries inside the transaction of the change they
  report, so an event exists exactly when its change was committed;
- subscriptions: SubscriptionService creates, lists and deletes subscriptions and requeues dead
  letters;
- delivery: DeliveryWorker sends the outbox (DeliveryPolicy: attempts, backoff, concurrency);
- stream: EventStream follows the event log for the SSE endpoint (SubscriptionService.streams);
- signals: the in-process wake-ups that let the worker and the streams act at commit time.
"""

from provider.services.notifications.delivery import DeliveryPolicy, DeliveryWorker, NullObserver
from provider.services.notifications.outbox import FINAL_EXECUTION_TYPES, FINAL_IMPORT_TYPES, EventLog
from provider.services.notifications.signals import Signal
from provider.services.notifications.stream import STREAM_LOOKBACK_SECONDS, EventStream
from provider.services.notifications.subscriptions import SubscriptionService

__all__ = [
    "FINAL_EXECUTION_TYPES",
    "FINAL_IMPORT_TYPES",
    "STREAM_LOOKBACK_SECONDS",
    "DeliveryPolicy",
    "DeliveryWorker",
    "EventLog",
    "EventStream",
    "NullObserver",
    "Signal",
    "SubscriptionService",
]
