import Logging

/// One JSON object per line on stdout: `{"ts","level","logger","msg", ...metadata}`, metadata
/// keys in byte order. Encoded straight to bytes and written by the background
/// `LogLineWriter`, so logging never blocks a request. Bootstrapped by `sluice serve` only.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let writer: LogLineWriter

    public init(label: String, level: Logger.Level = .info, writer: LogLineWriter = .standardOutput) {
        self.label = label
        self.logLevel = level
        self.writer = writer
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = JSONLineEncoder()
        Self.encode(event, label: label, metadata: metadata, into: &line)
        writer.append(line.bytes)
    }

    static func encode(_ event: LogEvent, label: String, metadata: Logger.Metadata, into line: inout JSONLineEncoder) {
        line.begin()
        line.field("ts", raw: LogTimestamp.now())
        line.field("level", event.level.rawValue)
        line.field("logger", label)
        line.field("msg", event.message.description)
        let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        for key in merged.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            switch merged[key]! {
            case .string(let text):
                // Counts logged as text read as numbers.
                if let number = Int(text) { line.field(dynamic: key, number) } else { line.field(dynamic: key, text) }
            case let other:
                line.field(dynamic: key, other.description)
            }
        }
        line.end()
    }
}
