//! QUIC application error codes: why a stream was reset (or stopped) and
//! why a connection was closed. Every side uses these, never raw numbers.
//! A code's number never changes; new codes take new numbers.

/// Stream reset and stop codes (`RESET_STREAM` / `STOP_SENDING`).
pub mod reset {
    use crate::ErrorKind;

    /// The side that reset gave up on the stream on purpose, with no error
    /// to report: the client dropped its call, or the agent stops reading
    /// a request it already answered.
    pub const CANCELLED: u32 = 0;
    /// The gateway reset the call: its timeout expired (the client reports
    /// [`ErrorKind::Timeout`]).
    pub const TIMEOUT: u32 = 1;
    /// The gateway reset the call: the node serving it was lost while its
    /// result was being relayed (the client reports [`ErrorKind::NodeLost`]).
    pub const NODE_LOST: u32 = 2;
    /// The gateway reset the node's stream: the client went away while the
    /// call waited or ran.
    pub const CLIENT_GONE: u32 = 3;

    /// The call error a reset code stands for, when it stands for one.
    pub fn error_kind(code: u64) -> Option<ErrorKind> {
        match code {
            c if c == u64::from(TIMEOUT) => Some(ErrorKind::Timeout),
            c if c == u64::from(NODE_LOST) => Some(ErrorKind::NodeLost),
            _ => None,
        }
    }
}

/// Connection close codes (`CONNECTION_CLOSE` of the application).
pub mod close {
    /// Closed on purpose, no error: an agent or client shutting down or
    /// reconnecting, an idle client dropped.
    pub const NORMAL: u32 = 0;
    /// The gateway refused the agent's registration (wrong token, bad spec).
    pub const REFUSED: u32 = 2;
    /// The node missed its stats or its control stream closed.
    pub const STATS_MISSED: u32 = 3;
    /// A newer connection registered the same node id.
    pub const REPLACED: u32 = 4;
    /// The gateway is shutting down.
    pub const SHUTDOWN: u32 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_numbers() {
        assert_eq!(
            [
                reset::CANCELLED,
                reset::TIMEOUT,
                reset::NODE_LOST,
                reset::CLIENT_GONE
            ],
            [0, 1, 2, 3]
        );
        assert_eq!(
            [
                close::NORMAL,
                close::REFUSED,
                close::STATS_MISSED,
                close::REPLACED,
                close::SHUTDOWN
            ],
            [0, 2, 3, 4, 5]
        );
        assert_eq!(reset::error_kind(1), Some(crate::ErrorKind::Timeout));
        assert_eq!(reset::error_kind(2), Some(crate::ErrorKind::NodeLost));
        assert_eq!(reset::error_kind(3), None);
    }
}
