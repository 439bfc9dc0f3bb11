//! The application's handlers ([`Pullkin::on_notification`](crate::Pullkin::on_notification))
//! and the dispatch of a decoded message to those whose filter matches. A handler that
//! errs or panics is reported as [`Event::HandlerFailed`]; nothing stops.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::broadcast;
use tracing::warn;

use super::delivery::ReadyMessage;
use crate::error::{HandlerError, Panicked};
use crate::event::Event;
use crate::message::{Message, Stanza};

/// What a handler returns: `()`, or a `Result` whose error is reported as
/// [`Event::HandlerFailed`].
pub trait HandlerResult {
    /// The error to report, if any.
    fn into_error(self) -> Option<HandlerError>;
}

impl HandlerResult for () {
    fn into_error(self) -> Option<HandlerError> {
        None
    }
}

impl<E: Into<HandlerError>> HandlerResult for Result<(), E> {
    fn into_error(self) -> Option<HandlerError> {
        self.err().map(Into::into)
    }
}

type Filter = Box<dyn Fn(&Message, &Stanza) -> bool + Send + Sync>;
type SyncCallback = Box<dyn Fn(&Message, &Stanza) -> Option<HandlerError> + Send + Sync>;
type BoxFuture = Pin<Box<dyn Future<Output = Option<HandlerError>> + Send>>;
type AsyncCallback = Box<dyn Fn(Message, Stanza) -> BoxFuture + Send + Sync>;

enum Callback {
    Sync(SyncCallback),
    Async(AsyncCallback),
}

/// One registered handler with its filter.
pub(crate) struct Handler {
    filter: Filter,
    callback: Callback,
}

impl Handler {
    /// A handler called in the dispatching task.
    pub(crate) fn sync<F, H, R>(filter: F, handler: H) -> Self
    where
        F: Fn(&Message, &Stanza) -> bool + Send + Sync + 'static,
        H: Fn(&Message, &Stanza) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        Self {
            filter: Box::new(filter),
            callback: Callback::Sync(Box::new(move |m, s| handler(m, s).into_error())),
        }
    }

    /// A handler whose future the dispatching task awaits.
    pub(crate) fn spawned<F, H, Fut, R>(filter: F, handler: H) -> Self
    where
        F: Fn(&Message, &Stanza) -> bool + Send + Sync + 'static,
        H: Fn(Message, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        Self {
            filter: Box::new(filter),
            callback: Callback::Async(Box::new(move |m, s| {
                let future = handler(m, s);
                Box::pin(async move { future.await.into_error() })
            })),
        }
    }

    /// Runs the filter and, when it matches, the handler; the error to report, if any.
    async fn call(&self, message: &Message, stanza: &Stanza) -> Option<HandlerError> {
        let panicked = |what, panic: Box<dyn std::any::Any + Send>| -> Option<HandlerError> {
            Some(Box::new(Panicked::new(what, &*panic)))
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.filter)(message, stanza))) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(panic) => return panicked("filter", panic),
        }
        match &self.callback {
            Callback::Sync(callback) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| callback(message, stanza)))
                    .unwrap_or_else(|panic| panicked("handler", panic))
            }
            Callback::Async(callback) => {
                let future = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    callback(message.clone(), stanza.clone())
                }));
                match future {
                    Ok(future) => AssertUnwindSafe(future)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| panicked("handler", panic)),
                    Err(panic) => panicked("handler", panic),
                }
            }
        }
    }
}

/// Calls the matching handlers, then acknowledges the message.
pub(crate) async fn dispatch(
    handlers: &[Arc<Handler>],
    ready: ReadyMessage,
    events: &broadcast::Sender<Event>,
) {
    for handler in handlers {
        if let Some(error) = handler.call(&ready.message, &ready.stanza).await {
            warn!(app = %ready.app, "handler failed: {error}");
            let _ = events.send(Event::HandlerFailed {
                app: ready.app.to_string(),
                persistent_id: ready.message.persistent_id.clone(),
                error: Arc::new(error),
            });
        }
    }
    ready.handled();
}
