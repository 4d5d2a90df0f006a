import NIOCore

/// Frames to the peer: the control queue and the data scheduler.
extension YamuxSession {
    /// The frames to write now, at most `maximumBytes` on the wire, and the actions that sending them
    /// caused (`.writable` when a queue drained, `.streamClosed` when a FIN completed a stream).
    ///
    /// Control frames go first, in the order they were queued; data only once no control frame waits,
    /// so a stream's SYN always precedes its data. Data goes by priority with weighted fair queueing
    /// (`YamuxScheduler`), at most `maximumFramePayload` per frame and never beyond a stream's send
    /// window; a data frame is cut to fit `maximumBytes`. Call it while the socket is writable until
    /// it returns no frames.
    public mutating func nextOutboundFrames(maximumBytes: Int) -> (frames: [YamuxFrame], actions: [YamuxAction]) {
        precondition(maximumBytes >= 0, "maximumBytes must not be negative")
        var budget = maximumBytes
        var frames: [YamuxFrame] = []
        var actions: [YamuxAction] = []

        while budget >= YamuxFrame.headerSize, let entry = control.popFirst() {
            switch entry {
            case .frame(let frame, let owed):
                if owed { owedControlFrames -= 1 }
                frames.append(frame)
                budget -= frame.encodedSize
            case .stream(let id):
                guard streams[id] != nil else { continue }  // freed since
                streams[id]!.hasControlEntry = false
                if let frame = streams[id]!.takeControlFrame() {
                    frames.append(frame)
                    budget -= frame.encodedSize
                }
            }
        }
        guard control.isEmpty else { return (frames, actions) }

        // A data frame needs its header and at least one byte (a lone FIN waits for the next call).
        while budget > YamuxFrame.headerSize, let (id, priority) = scheduler.next() {
            guard streams[id] != nil else { continue }  // freed since: drop the entry
            guard streams[id]!.priority == priority else {
                scheduler.enqueue(id, at: streams[id]!.priority)  // priority changed: move the entry
                continue
            }
            let maximumPayload = min(configuration.maximumFramePayload, budget - YamuxFrame.headerSize)
            let costBefore = streams[id]!.sendQueue.memoryCost
            guard let frame = streams[id]!.takeDataFrame(maximumPayload: maximumPayload) else {
                streams[id]!.isScheduled = false  // nothing to send (window closed since)
                continue
            }
            totalSendQueueCost += streams[id]!.sendQueue.memoryCost - costBefore
            frames.append(frame)
            budget -= frame.encodedSize
            scheduler.charge(frame.encodedSize, to: priority)

            if streams[id]!.owesWritable
                && streams[id]!.sendQueue.count <= configuration.maximumQueuedBytesPerStream / 2
            {
                streams[id]!.owesWritable = false
                actions.append(.writable(id))
            }
            if streams[id]!.isFinished {
                free(id)
                actions.append(.streamClosed(id))
            } else if streams[id]!.hasDataToSend {
                scheduler.enqueue(id, at: priority)
            } else {
                streams[id]!.isScheduled = false
            }
        }
        if !waitingForBudget.isEmpty, totalSendQueueCost <= configuration.sessionSendQueueBudget / 2,
            memoryInUse < memoryLimit
        {
            actions += retryWaitingWriters()
        }
        return (frames, actions)
    }

    // MARK: - Queueing

    /// Queues a frame of ours (not provoked by the peer).
    mutating func enqueue(_ frame: YamuxFrame) {
        control.append(.frame(frame, owed: false))
        queuedOutbound = true
    }

    /// Queues a frame the peer provoked (a ping answer, an RST for a refused stream).
    ///
    /// - Throws: `.resourceLimit` when `maximumPendingControlFrames` such frames already wait: the
    ///   peer makes us owe answers faster than it reads them (ping or reset flood).
    mutating func enqueueOwed(_ frame: YamuxFrame) throws(SessionError) {
        guard owedControlFrames < configuration.maximumPendingControlFrames else {
            throw SessionError(
                .resourceLimit,
                "the peer provoked \(owedControlFrames) yamux frames (ping answers, resets) without reading them")
        }
        owedControlFrames += 1
        control.append(.frame(frame, owed: true))
        queuedOutbound = true
    }

    /// Queues the window update of `stream` (SYN, ACK, credit), once.
    mutating func enqueueControl(for stream: YamuxStreamID) {
        guard !streams[stream]!.hasControlEntry else { return }
        streams[stream]!.hasControlEntry = true
        control.append(.stream(stream))
        queuedOutbound = true
    }

    /// Hands `stream` to the scheduler if it has something to send and is not there yet.
    mutating func schedule(_ stream: YamuxStreamID) {
        guard let current = streams[stream], !current.isScheduled, current.hasDataToSend else { return }
        streams[stream]!.isScheduled = true
        scheduler.enqueue(stream, at: current.priority)
        queuedOutbound = true
    }
}
