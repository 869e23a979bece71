import Foundation

/// `promtool check metrics` on a Prometheus exposition, when promtool is installed (Debian's
/// `prometheus` package; the test command installs it).
public enum PromtoolCheck {
    public struct Verdict: Sendable {
        public let passed: Bool
        public let output: String
    }

    /// nil when promtool is not on this machine.
    public static func metrics(_ exposition: String) -> Verdict? {
        guard let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile)
        else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            return Verdict(passed: false, output: "promtool did not start: \(error)")
        }
        input.fileHandleForWriting.write(Data(exposition.utf8))
        try? input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Verdict(passed: process.terminationStatus == 0, output: text)
    }
}
