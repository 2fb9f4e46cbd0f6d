// libFuzzer harness: parse_envelope(), the structural check of a binary envelope
// (the binary receive function and decrypt_field run it on untrusted bytes).
//
// Invariants, against the rules of docs/format.md section 1 (re-implemented here
// independently of the parser):
//   - the verdict is exactly the documented one (at least 34 bytes; format 1: 38 bytes,
//     algorithm 1; format 2: a shortest-form LEB128 version of at most 5 bytes and at
//     most 2^32 - 1, room for the tag; key id and DEK version non-zero), with a
//     non-empty detail on rejection;
//   - an accepted envelope's views lie inside the input and cover it exactly (header,
//     ciphertext, tag), its header fields are the bytes at their offsets, and
//     write_header() re-serializes the parsed header to the same bytes;
//   - the AAD built from an accepted header has the documented layout;
//   - the text form of any bytes decodes back to the same bytes, with the same verdict.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/envelope_format.hpp"

using namespace pg_envelope;

namespace {

bool inside(ByteView part, ByteView whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

struct Expected {
  const char* problem = nullptr;
  std::size_t header = 0;
  std::uint32_t key_id = 0, version = 0;
};

Expected expected_verdict(ByteView b) {
  Expected e;
  if (b.size() < 34) return {"length"};
  if (b[0] == 1) {
    if (b.size() < 38) return {"length"};
    if (b[1] != 1) return {"algorithm"};
    e.header = 22;
    e.key_id = load_be32(b.data() + 2);
    e.version = load_be32(b.data() + 6);
  } else if (b[0] == 2) {
    std::uint64_t v = 0;
    std::size_t n = 0;
    bool done = false;
    for (; n < 5 && 5 + n < b.size(); ++n) {
      v += static_cast<std::uint64_t>(b[5 + n] & 0x7F) << (7 * n);
      if (!(b[5 + n] & 0x80)) {
        done = true;
        ++n;
        break;
      }
    }
    if (!done || (n > 1 && b[5 + n - 1] == 0) || v > 0xFFFFFFFFull) return {"version encoding"};
    e.header = 5 + n + 12;
    if (b.size() < e.header + 16) return {"length"};
    e.key_id = load_be32(b.data() + 1);
    e.version = static_cast<std::uint32_t>(v);
  } else {
    return {"format"};
  }
  if (e.key_id == 0 || e.version == 0) return {"dek"};
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView in(data, size);
  EnvelopeView view;
  const FormatProblem problem = parse_envelope(in, view);
  const Expected expected = expected_verdict(in);

  FUZZ_CHECK(static_cast<bool>(problem) == (expected.problem != nullptr), "verdict differs from docs/format.md");
  if (problem) {
    FUZZ_CHECK(problem.detail[0] != '\0', "a rejection has an empty detail");
  } else {
    const std::size_t hs = expected.header;
    FUZZ_CHECK(size >= hs + kGcmTagSize && size >= kMinEnvelopeSize, "accepted a value too short");
    FUZZ_CHECK(inside(view.header_bytes, in) && inside(view.ciphertext, in) && inside(view.tag, in),
               "a view points outside the input");
    FUZZ_CHECK(view.header_bytes.data() == data && view.header_bytes.size() == hs, "header view");
    FUZZ_CHECK(view.ciphertext.data() == data + hs && view.ciphertext.size() == size - hs - kGcmTagSize,
               "ciphertext view");
    FUZZ_CHECK(view.tag.data() == data + size - kGcmTagSize && view.tag.size() == kGcmTagSize, "tag view");

    const EnvelopeHeader& h = view.header;
    FUZZ_CHECK(h.format == data[0] && h.algorithm == kAlgAes256Gcm, "format/algorithm fields");
    FUZZ_CHECK(h.dek.key_id == expected.key_id && h.dek.version == expected.version, "DEK reference fields");
    FUZZ_CHECK(h.dek.key_id != 0 && h.dek.version != 0, "accepted a zero key id or version");
    FUZZ_CHECK(std::memcmp(h.nonce, data + hs - kGcmNonceSize, kGcmNonceSize) == 0, "nonce field");
    FUZZ_CHECK(header_size(h) == hs, "header_size(parse(x)) != header length of x");

    std::uint8_t again[kMaxHeaderSize];
    FUZZ_CHECK(write_header(h, again) == hs, "write_header length");
    FUZZ_CHECK(std::memcmp(again, data, hs) == 0, "write_header(parse(x)) != header of x");

    // AAD = header || type || 0x00, or header || type || 0x01 || context. The first
    // ciphertext byte picks the variant, the rest of the ciphertext is the context.
    const bool has_context = !view.ciphertext.empty() && (view.ciphertext[0] & 1);
    const std::string_view context =
        has_context ? std::string_view(reinterpret_cast<const char*>(view.ciphertext.data()) + 1,
                                       view.ciphertext.size() - 1)
                    : std::string_view();
    Bytes aad = {0xEE};  // stale content must not survive
    build_aad(view.header_bytes, PlainType::kBytea, has_context, context, aad);
    FUZZ_CHECK(aad.size() == hs + 2 + context.size(), "AAD length");
    FUZZ_CHECK(std::memcmp(aad.data(), data, hs) == 0, "AAD begins with the header");
    FUZZ_CHECK(aad[hs] == static_cast<std::uint8_t>(PlainType::kBytea), "AAD type byte");
    FUZZ_CHECK(aad[hs + 1] == (has_context ? 1 : 0), "AAD context flag");
    FUZZ_CHECK(context.empty() || std::memcmp(aad.data() + hs + 2, context.data(), context.size()) == 0,
               "AAD context bytes");
  }

  // The text form of any bytes decodes back to them; decoding then checks the structure
  // with the same verdict.
  std::string text(text_form_length(size), '\0');
  write_text_form(in, text.data());
  FUZZ_CHECK(text.compare(0, kTextPrefix.size(), kTextPrefix) == 0, "text form prefix");
  Bytes back;
  const FormatProblem text_problem = decode_text_form(text, back);
  FUZZ_CHECK(static_cast<bool>(text_problem) == static_cast<bool>(problem), "text verdict != binary verdict");
  FUZZ_CHECK(back.size() == size && (size == 0 || std::memcmp(back.data(), data, size) == 0),
             "decode_text_form(write_text_form(x)) != x");
  return 0;
}
