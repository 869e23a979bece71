import NIOCore
import NIOPosix
import Synchronization

/// Runs Swift tasks on a NIO event loop. A request handled under this preference stays on its
/// connection's loop: the Redis and upstream futures it awaits complete on that loop too, so
/// nothing hops to the global pool and back (each hop is a thread wake-up).
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// One executor per loop, made on first use.
    public static func on(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let existing = executors[ObjectIdentifier(eventLoop)] { return existing }
            let made = EventLoopTaskExecutor(eventLoop)
            executors[ObjectIdentifier(eventLoop)] = made
            return made
        }
    }

    /// The executor of the loop this thread runs, if it runs one: work started from a request
    /// (a settle batch, say) stays on that request's loop instead of waking a pool thread.
    public static var current: EventLoopTaskExecutor? {
        MultiThreadedEventLoopGroup.currentEventLoop.map(on)
    }
}

/// Runs `body` on `eventLoop`: at once when already there (the usual case: requests run on their
/// connection's loop), otherwise by a hop. `unavailable` is the answer when the loop has shut
/// down and can run nothing more.
public func onLoop<Value: Sendable>(_ eventLoop: any EventLoop, unavailable: @autoclosure () -> Value,
                                    _ body: @escaping @Sendable () -> Value) async -> Value {
    if eventLoop.inEventLoop { return body() }
    do {
        return try await eventLoop.submit(body).get()
    } catch {
        return unavailable()
    }
}
