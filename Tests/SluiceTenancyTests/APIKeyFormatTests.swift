import Testing

@testable import SluiceTenancy

@Suite("API key format")
struct APIKeyFormatTests {
    @Test func generatedKeysParseBackAndDiffer() {
        let keys = (0..<100).map { _ in APIKey.generate() }
        for key in keys {
            #expect(APIKey(parsing: key.plaintext) == key)
            #expect(key.plaintext.hasPrefix("slk_"))
            #expect(!key.description.contains(key.secret))
        }
        #expect(Set(keys.map(\.keyID)).count == 100)
        #expect(Set(keys.map(\.secret)).count == 100)
    }

    @Test func everySingleCharacterTypoIsCaughtWithoutIO() {
        let text = Array(APIKey.generate().plaintext)
        var caught = 0
        for index in text.indices {
            var typo = text
            typo[index] = text[index] == "x" ? "y" : "x"
            if APIKey(parsing: String(typo)) == nil { caught += 1 }
        }
        // A 6-character checksum over 62 symbols: a collision is possible but not for a one-letter typo here.
        #expect(caught == text.count)
    }

    @Test(arguments: ["", "slk_", "sk-proj-abc", "Bearer slk_x", String(repeating: "a", count: 55),
                      "slk_ABCDEFGHIJKL-" + String(repeating: "a", count: 38), "slk_ABCDEFGHIJKL_" + String(repeating: "é", count: 38)])
    func malformedKeysAreRefused(_ text: String) {
        #expect(APIKey(parsing: text) == nil)
    }

    @Test func truncatedOrExtendedKeysAreRefused() {
        let text = APIKey.generate().plaintext
        #expect(APIKey(parsing: text.dropLast()) == nil)
        #expect(APIKey(parsing: text + "a") == nil)
        #expect(APIKey(parsing: " " + text.dropFirst()) == nil)
    }

    @Test func hashesMatchOnlyTheirSecretAndPepper() {
        let key = APIKey.generate()
        let hasher = KeyHasher(pepper: "pepper-one")
        let stored = hasher.hash(key.secret)
        #expect(stored.count == 32)
        #expect(hasher.matches(key.secret, storedHash: stored))
        #expect(!hasher.matches(APIKey.generate().secret, storedHash: stored))
        #expect(!KeyHasher(pepper: "pepper-two").matches(key.secret, storedHash: stored))
        #expect(!hasher.matches(key.secret, storedHash: Array(stored.dropLast())))
    }
}
