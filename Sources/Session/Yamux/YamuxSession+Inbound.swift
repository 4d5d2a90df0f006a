import NIOCore

/// Frames from the peer.
extension YamuxSession {
    /// Parses every complete frame in `bytes` and handles each; an incomplete frame stays in `bytes`
    /// for the next call.
    ///
    /// - Throws: the first error of `readYamuxFrame` or `receive(_:now:)`. The session has then
    ///   failed (see `receive(_:now:)`).
    public mutating func receive(bytes: inout ByteBuffer, now: NIODeadline) throws(SessionError) -> [YamuxAction] {
        try checkActive()
        var actions: [YamuxAction] = []
        var outboundReady = false
        while true {
            let frame: YamuxFrame?
            let window = receiveWindowLimit(forNextFrameIn: bytes)
            do {
                frame = try bytes.readYamuxFrame(maximumPayload: window ?? maximumInboundFramePayload)
            } catch {
                let reported =
                    window != nil && error.kind == .messageTooLarge
                    ? SessionError(.flowControlViolation, "\(error.message), beyond what the stream's window allows")
                    : error
                fail(reported)
                throw reported
            }
            guard let frame else { break }
            for action in try receive(frame, now: now) {
                if action == .outboundReady { outboundReady = true } else { actions.append(action) }
            }
        }
        if outboundReady { actions.append(.outboundReady) }
        return actions
    }

    /// The credit the next frame in `bytes` may use, known from its header before its payload
    /// arrives: a live stream's remaining credit, or the spec's initial window for a SYN. `nil` when
    /// the stream is unknown (a late frame for a closed stream may use credit we no longer track); the
    /// largest window bounds it then. So a peer cannot make the caller buffer more than a window of a
    /// frame we will refuse.
    public func receiveWindowLimit(forNextFrameIn bytes: ByteBuffer) -> Int? {
        guard let rawFlags: UInt16 = bytes.getInteger(at: bytes.readerIndex + 2),
            let rawStreamID: UInt32 = bytes.getInteger(at: bytes.readerIndex + 4)
        else { return nil }
        if let stream = streams[YamuxStreamID(rawStreamID)] { return Int(stream.receiveWindow.credit.size) }
        if YamuxFrame.Flags(rawValue: rawFlags).contains(.syn) { return Int(YamuxConfiguration.specInitialWindow) }
        return nil
    }

    /// Handles one frame from the peer.
    ///
    /// - Throws: every error is the peer's and ends the session: `.protocolViolation` (a frame the
    ///   spec does not allow here: SYN with the wrong parity or a reused id, data for a stream never
    ///   opened, data after FIN, a second ACK or FIN, ping/GoAway off stream 0, an unmatched ping
    ///   answer), `.flowControlViolation` (data beyond the window, a window past 2^32-1),
    ///   `.resourceLimit` (more unanswered pings or refused SYNs than `maximumPendingControlFrames`).
    ///   The session then drops all streams and queues a GoAway for the peer.
    public mutating func receive(_ frame: YamuxFrame, now: NIODeadline) throws(SessionError) -> [YamuxAction] {
        try checkActive()
        precondition(
            frame.type == .data ? Int(frame.length) == frame.payload.readableBytes : frame.payload.readableBytes == 0,
            "yamux frame's length and payload disagree: \(frame)")
        queuedOutbound = false
        var actions: [YamuxAction] = []
        do {
            switch frame.type {
            case .data, .windowUpdate: try receiveStreamFrame(frame, now: now, into: &actions)
            case .ping: try receivePing(frame, now: now, into: &actions)
            case .goAway: try receiveGoAway(frame, into: &actions)
            }
        } catch {
            fail(error)
            throw error
        }
        if queuedOutbound { actions.append(.outboundReady) }
        return actions
    }

    // MARK: - Streams

    private mutating func receiveStreamFrame(
        _ frame: YamuxFrame, now: NIODeadline, into actions: inout [YamuxAction]
    ) throws(SessionError) {
        let id = frame.streamID
        guard id != .session else {
            throw SessionError(.protocolViolation, "yamux \(frame.type) frame on stream 0, which is the session's")
        }
        if frame.flags.contains(.syn) {
            guard try acceptSYN(frame, into: &actions) else { return }
        }
        guard streams[id] != nil else { return try receiveForGoneStream(frame) }

        if frame.flags.contains(.ack) {
            // yamux spec, "Opening a stream": the receiver replies "with the ACK flag to accept the
            // stream". Only the opener's streams get one, and once.
            guard streams[id]!.isOutbound else {
                throw SessionError(.protocolViolation, "ACK for yamux stream \(id), which the peer opened itself")
            }
            guard !streams[id]!.acknowledged else {
                throw SessionError(.protocolViolation, "second ACK for yamux stream \(id)")
            }
            streams[id]!.acknowledged = true
            unacknowledgedOutbound -= 1
        }

        switch frame.type {
        case .data:
            let count = UInt32(frame.payload.readableBytes)  // == frame.length, a UInt32
            if count > 0 {
                guard !streams[id]!.remoteClosed else {
                    throw SessionError(.protocolViolation, "data on yamux stream \(id) after the peer's FIN")
                }
                do {
                    try streams[id]!.receiveWindow.receive(count, now: now)
                } catch {
                    throw SessionError(error.kind, "yamux stream \(id): \(error.message)")
                }
                actions.append(.deliver(id, frame.payload))
            }
        case .windowUpdate:
            do {
                try streams[id]!.sendWindow.increase(by: frame.length)
            } catch {
                throw SessionError(error.kind, "yamux stream \(id): \(error.message)")
            }
            schedule(id)
        case .ping, .goAway:
            preconditionFailure("not a stream frame: \(frame)")
        }

        // RST ends the stream whatever else the frame says.
        if frame.flags.contains(.rst) {
            free(id)
            actions.append(.streamReset(id))
        } else if frame.flags.contains(.fin) {
            guard !streams[id]!.remoteClosed else {
                throw SessionError(.protocolViolation, "second FIN on yamux stream \(id)")
            }
            streams[id]!.remoteClosed = true
            actions.append(.remoteClosedWrite(id))
            if streams[id]!.isFinished {
                free(id)
                actions.append(.streamClosed(id))
            }
        }
    }

    /// Handles the SYN of `frame`. Returns whether the stream was accepted (the rest of the frame then
    /// applies to it), or `false` when it was refused with RST.
    private mutating func acceptSYN(_ frame: YamuxFrame, into actions: inout [YamuxAction]) throws(SessionError) -> Bool
    {
        let id = frame.streamID
        guard !frame.flags.contains(.ack) else {
            throw SessionError(.protocolViolation, "yamux frame for stream \(id) carries both SYN and ACK")
        }
        guard isPeers(id) else {
            throw SessionError(
                .protocolViolation,
                "SYN for yamux stream \(id): the \(role == .client ? "server" : "client") opens \(role == .client ? "even" : "odd") ids only"
            )
        }
        guard streams[id] == nil, !closedInbound.contains(id) else {
            throw SessionError(.protocolViolation, "SYN for yamux stream \(id), an id already in use")
        }
        highestInboundID = max(highestInboundID, id.rawValue)

        // Refused: after our GoAway, at the stream limit, or when its initial window does not fit
        // the receive-window budget (initial windows count: 300 streams of 256 KiB would otherwise
        // promise 75 MiB beyond it). The peer learns it from the RST and may retry later; the
        // session goes on (a busy peer is not a broken one).
        let withinStreamLimit = streams.count < configuration.maximumStreams
        let withinMemory = hasRoomForNewStream
        guard !sentGoAway, withinStreamLimit, withinMemory else {
            if !sentGoAway {
                if !withinStreamLimit { refusedForStreamLimit += 1 } else { refusedForMemory += 1 }
            }
            // A SYN frame's data still counts against the initial window the spec grants it.
            guard frame.type != .data || frame.length <= YamuxConfiguration.specInitialWindow else {
                throw SessionError(
                    .flowControlViolation,
                    "yamux stream \(id) opened with \(frame.length) bytes, more than the initial window of 256 KiB")
            }
            closedInbound.insert(id)
            if !frame.flags.contains(.rst) {
                try enqueueOwed(.windowUpdate(id, delta: 0, flags: .rst))
            }
            return false
        }

        streams[id] = YamuxStream(
            inbound: id, priority: .normal, initialReceiveWindow: configuration.initialReceiveWindow)
        totalReceiveWindow += Int(configuration.initialReceiveWindow)
        actions.append(.streamOpened(id))
        // The ACK goes out at once (py-libp2p expects it promptly), as a window update of its own.
        enqueueControl(for: id)
        return true
    }

    /// A frame without SYN for a stream that is not live. A stream that ended may still get frames
    /// the peer sent before it learnt (yamux has no "closed" handshake): those are ignored. A stream
    /// that never existed is the peer's error.
    private func receiveForGoneStream(_ frame: YamuxFrame) throws(SessionError) {
        let id = frame.streamID
        if isPeers(id) {
            if closedInbound.contains(id) { return }
            // Once the bounded memory has forgotten ids, any id the peer has reached may be one of them.
            if closedInbound.hasForgotten && id.rawValue <= highestInboundID { return }
        } else if UInt64(id.rawValue) < nextOutboundID {
            return  // ours, closed or reset: every id below the next one was opened by us
        }
        throw SessionError(
            .protocolViolation, "yamux \(frame.type) frame \(frame.flags) for stream \(id), which was never opened")
    }

    /// Whether `id` has the peer's parity.
    private func isPeers(_ id: YamuxStreamID) -> Bool {
        id != .session && id.isClientInitiated == (role == .server)
    }

    // MARK: - Session frames

    private mutating func receivePing(
        _ frame: YamuxFrame, now: NIODeadline, into actions: inout [YamuxAction]
    ) throws(SessionError) {
        guard frame.streamID == .session else {
            throw SessionError(.protocolViolation, "yamux ping on stream \(frame.streamID); pings use stream 0")
        }
        switch (frame.flags.contains(.syn), frame.flags.contains(.ack)) {
        case (true, false):
            // yamux spec, "Length Field": a ping "Contains an opaque value, echoed back".
            try enqueueOwed(.ping(opaque: frame.length, ack: true))
        case (false, true):
            guard let index = outstandingPings.firstIndex(where: { $0.opaque == frame.length }) else {
                throw SessionError(.protocolViolation, "yamux ping answer \(frame.length) matches no ping of ours")
            }
            let ping = outstandingPings.remove(at: index)
            let rtt = max(now - ping.sentAt, .zero)
            if let smoothed = smoothedRTT {
                smoothedRTT = .nanoseconds((7 * smoothed.nanoseconds + rtt.nanoseconds) / 8)
            } else {
                smoothedRTT = rtt
            }
            actions.append(.pingResult(rtt: rtt))
        default:
            throw SessionError(
                .protocolViolation, "yamux ping with flags \(frame.flags); it needs exactly one of SYN and ACK")
        }
    }

    private mutating func receiveGoAway(_ frame: YamuxFrame, into actions: inout [YamuxAction]) throws(SessionError) {
        guard frame.streamID == .session else {
            throw SessionError(.protocolViolation, "yamux GoAway on stream \(frame.streamID); GoAway uses stream 0")
        }
        receivedGoAway = true
        actions.append(.goAwayReceived(YamuxFrame.GoAwayCode(rawValue: frame.length)))
    }
}
