// The grammar check (see grammar.h). The syntax follows llama.cpp's GBNF
// parser step by step (src/llama-grammar.cpp in the tree), so that a grammar
// this accepts is one llama.cpp parses, and the counts it keeps (symbols,
// repetitions) are llama.cpp's.
#include "grammar.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <vector>

namespace llmodel {
namespace {

constexpr uint64_t kMaxRepetition = 2000;         // llama.cpp's MAX_REPETITION_THRESHOLD
constexpr uint64_t kMaxExpanded = 4u << 20;       // grammar elements once repetitions are expanded
constexpr size_t kMaxText = 8u << 20;             // bytes of grammar text
constexpr int kMaxNesting = 200;                  // parentheses inside each other
constexpr size_t kMaxLeftmostChain = 4000;        // rules llama.cpp's matcher recurses through at once
constexpr uint64_t kUnbounded = UINT64_MAX;

struct Failure {
    size_t offset;
    std::string why;
};

// One item of a sequence: something that consumes input (a terminal), or a
// rule (named, or one made for a group), with the repetitions applied to it.
struct Item {
    bool is_rule = false;
    uint32_t rule = 0;
    uint64_t min = 1;            // least number of times it occurs (products of repetitions)
    bool unbounded = false;      // some repetition of it has no upper bound
    bool unbounded_empty = false; // an unbounded repetition applied when it could already occur 0 times
    size_t offset = 0;           // where it starts in the text
};

struct Rule {
    std::string name;            // the rule's own name, or the rule a group was written in
    bool defined = false;
    bool generated = false;
    size_t offset = 0;           // definition, or first reference while undefined
    std::vector<std::vector<Item>> alternatives;
};

bool is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Checker {
public:
    Checker(const std::string &text, const llama_vocab *vocab) : text_(text), s_(text.c_str()), vocab_(vocab) {}

    void parse() {
        const char *pos = space(s_, true);
        while (*pos) pos = parse_rule(pos);
    }

    void check(const std::string &root) {
        for (const Rule &r : rules_) {
            if (!r.defined) fail(r.offset, "rule '" + r.name + "' is used but never defined");
        }
        auto it = names_.find(root);
        if (it == names_.end()) throw Failure{text_.size(), "the grammar has no rule named '" + root + "' to start from"};
        compute_nullable();
        check_repetitions();
        check_left_recursion();
    }

private:
    [[noreturn]] void fail(const char *pos, const std::string &why) const {
        throw Failure{static_cast<size_t>(pos - s_), why};
    }
    [[noreturn]] void fail(size_t offset, const std::string &why) const { throw Failure{offset, why}; }

    const char *space(const char *pos, bool newline_ok) const {
        while (*pos == ' ' || *pos == '\t' || *pos == '#' || (newline_ok && (*pos == '\r' || *pos == '\n'))) {
            if (*pos == '#') {
                while (*pos && *pos != '\r' && *pos != '\n') ++pos;
            } else {
                ++pos;
            }
        }
        return pos;
    }

    const char *name_end(const char *pos) const {
        const char *p = pos;
        while (is_word_char(*p)) ++p;
        if (p == pos) fail(pos, "expected a rule name");
        return p;
    }

    const char *parse_int(const char *pos, uint64_t *value) const {
        const char *p = pos;
        while (is_digit(*p)) ++p;
        if (p == pos) fail(pos, "expected a number");
        if (p - pos > 18) fail(pos, "number too large");
        *value = std::stoull(std::string(pos, p));
        return p;
    }

    // One character of a literal or class: an escape or a UTF-8 character.
    const char *parse_char(const char *pos) const {
        if (*pos == '\\') {
            int hex = 0;
            switch (pos[1]) {
            case 'x': hex = 2; break;
            case 'u': hex = 4; break;
            case 'U': hex = 8; break;
            case 't': case 'r': case 'n': case '\\': case '"': case '[': case ']': case '-':
                return pos + 2;
            case '\0': fail(pos, "unexpected end of the grammar after '\\'");
            default: fail(pos, std::string("unknown escape '\\") + pos[1] + "'");
            }
            const char *p = pos + 2;
            for (int i = 0; i < hex; ++i, ++p) {
                if (!std::isxdigit(static_cast<unsigned char>(*p))) {
                    fail(pos, "expected " + std::to_string(hex) + " hex digits after '\\" + pos[1] + "'");
                }
            }
            return p;
        }
        const unsigned char c = static_cast<unsigned char>(*pos);
        if (!c) fail(pos, "unexpected end of the grammar");
        const int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        if (len == 0) fail(pos, "invalid UTF-8");
        for (int i = 1; i < len; ++i) {
            if ((static_cast<unsigned char>(pos[i]) & 0xC0) != 0x80) fail(pos, "invalid UTF-8");
        }
        return pos + len;
    }

    uint32_t symbol(const std::string &name, size_t offset) {
        auto it = names_.find(name);
        if (it != names_.end()) return it->second;
        const uint32_t id = static_cast<uint32_t>(rules_.size());
        names_.emplace(name, id);
        Rule r;
        r.name = name;
        r.offset = offset;
        rules_.push_back(std::move(r));
        return id;
    }

    uint32_t generated_symbol(const std::string &owner, size_t offset) {
        const uint32_t id = static_cast<uint32_t>(rules_.size());
        Rule r;
        r.name = owner;
        r.defined = true;
        r.generated = true;
        r.offset = offset;
        rules_.push_back(std::move(r));
        return id;
    }

    void count(uint64_t elements, const char *pos) {
        expanded_ += elements;
        if (expanded_ > kMaxExpanded) {
            fail(pos, "the grammar is too large once its repetitions are expanded (more than " +
                          std::to_string(kMaxExpanded) + " elements)");
        }
    }

    const char *parse_rule(const char *pos) {
        const char *end = name_end(pos);
        const std::string name(pos, end);
        const uint32_t id = symbol(name, static_cast<size_t>(pos - s_));
        if (rules_[id].defined) {
            fail(pos, "rule '" + name + "' is defined twice (first on line " + std::to_string(line_of(rules_[id].offset)) + ")");
        }
        rules_[id].defined = true;
        rules_[id].offset = static_cast<size_t>(pos - s_);
        const char *p = space(end, false);
        if (!(p[0] == ':' && p[1] == ':' && p[2] == '=')) fail(p, "expected '::=' after the rule name '" + name + "'");
        p = parse_alternates(space(p + 3, true), name, id, false);
        if (*p == '\r') {
            p += p[1] == '\n' ? 2 : 1;
        } else if (*p == '\n') {
            ++p;
        } else if (*p) {
            fail(p, std::string("unexpected '") + *p + "' (expected the end of the rule)");
        }
        return space(p, true);
    }

    const char *parse_alternates(const char *pos, const std::string &owner, uint32_t id, bool nested) {
        std::vector<std::vector<Item>> alts(1);
        const char *p = parse_sequence(pos, owner, alts.back(), nested);
        while (*p == '|') {
            alts.emplace_back();
            p = parse_sequence(space(p + 1, true), owner, alts.back(), nested);
        }
        count(alts.size() + 1, pos);
        rules_[id].alternatives = std::move(alts);
        return p;
    }

    const char *parse_sequence(const char *pos, const std::string &owner, std::vector<Item> &seq, bool nested) {
        const char *p = pos;
        bool have_last = false;    // an item a repetition may apply to
        uint64_t n_prev_rules = 1; // llama.cpp's count for its repetition limit
        uint64_t last_len = 0;     // elements of the last item, as llama.cpp stores them

        auto push = [&](Item it, uint64_t len) {
            seq.push_back(it);
            have_last = true;
            n_prev_rules = 1;
            last_len = len;
            count(len, p);
        };
        auto repeat = [&](const char *at, uint64_t min, uint64_t max) {
            if (!have_last) fail(at, "nothing before this repetition to repeat");
            const bool no_max = max == kUnbounded;
            const uint64_t total = (!no_max && max > 0) ? max : (min > 0 ? min : 1);
            if (n_prev_rules * total > kMaxRepetition) {
                fail(at, "this repetition, with the repetitions inside it, makes more than " +
                             std::to_string(kMaxRepetition) + " rules (llama.cpp's limit)");
            }
            n_prev_rules *= total;
            Item &it = seq.back();
            if (no_max) {
                if (it.min == 0) it.unbounded_empty = true;
                it.unbounded = true;
            }
            const uint64_t n_opt = no_max ? 1 : max - min;
            count((min > 0 ? min - 1 : 0) * last_len + n_opt * (last_len + 3), at);
            it.min = it.min * min;
            last_len = last_len * std::max<uint64_t>(min, 1) + 1;
        };

        while (*p) {
            const char *at = p;
            if (*p == '"') {
                ++p;
                uint64_t n = 0;
                while (*p != '"') {
                    if (!*p) fail(at, "this string literal is not closed");
                    p = parse_char(p);
                    ++n;
                }
                p = space(p + 1, nested);
                if (n == 0) {
                    have_last = false; // llama.cpp: "" leaves nothing to repeat
                    n_prev_rules = 1;
                } else {
                    Item it;
                    it.offset = static_cast<size_t>(at - s_);
                    push(it, n);
                }
            } else if (*p == '[') {
                ++p;
                if (*p == '^') ++p;
                uint64_t n = 0;
                while (*p != ']') {
                    if (!*p) fail(at, "this character class is not closed");
                    p = parse_char(p);
                    ++n;
                    if (p[0] == '-' && p[1] != ']') {
                        if (!p[1]) fail(at, "this character class is not closed");
                        p = parse_char(p + 1);
                        ++n;
                    }
                }
                p = space(p + 1, nested);
                Item it;
                it.offset = static_cast<size_t>(at - s_);
                push(it, std::max<uint64_t>(n, 1));
            } else if (*p == '<' || *p == '!') {
                const bool negated = *p == '!';
                if (negated) ++p;
                if (*p != '<') fail(p, "expected '<' after '!'");
                p = parse_token(p, negated);
                p = space(p, nested);
                Item it;
                it.offset = static_cast<size_t>(at - s_);
                push(it, 1);
            } else if (is_word_char(*p)) {
                const char *end = name_end(p);
                Item it;
                it.is_rule = true;
                it.rule = symbol(std::string(p, end), static_cast<size_t>(p - s_));
                it.offset = static_cast<size_t>(at - s_);
                p = space(end, nested);
                push(it, 1);
            } else if (*p == '(') {
                if (++depth_ > kMaxNesting) fail(p, "parentheses nested more than " + std::to_string(kMaxNesting) + " deep");
                const size_t before = rules_.size();
                const uint32_t sub = generated_symbol(owner, static_cast<size_t>(p - s_));
                p = parse_alternates(space(p + 1, true), owner, sub, true);
                if (*p != ')') fail(p, *p ? std::string("expected ')' but found '") + *p + "'" : std::string("expected ')' before the end of the grammar"));
                --depth_;
                p = space(p + 1, nested);
                Item it;
                it.is_rule = true;
                it.rule = sub;
                it.offset = static_cast<size_t>(at - s_);
                const uint64_t made = std::max<uint64_t>(1, rules_.size() - before);
                push(it, 1);
                n_prev_rules = made;
            } else if (*p == '.') {
                p = space(p + 1, nested);
                Item it;
                it.offset = static_cast<size_t>(at - s_);
                push(it, 1);
            } else if (*p == '*' || *p == '+' || *p == '?') {
                const char op = *p;
                p = space(p + 1, nested);
                repeat(at, op == '+' ? 1 : 0, op == '?' ? 1 : kUnbounded);
            } else if (*p == '{') {
                p = space(p + 1, nested);
                if (!is_digit(*p)) fail(p, "expected a number after '{'");
                uint64_t min = 0, max = kUnbounded;
                p = space(parse_int(p, &min), nested);
                if (*p == '}') {
                    max = min;
                    p = space(p + 1, nested);
                } else if (*p == ',') {
                    p = space(p + 1, nested);
                    if (is_digit(*p)) p = space(parse_int(p, &max), nested);
                    if (*p != '}') fail(p, "expected '}'");
                    p = space(p + 1, nested);
                } else {
                    fail(p, "expected ',' or '}'");
                }
                if (min > kMaxRepetition) fail(at, "more than " + std::to_string(kMaxRepetition) + " repetitions (llama.cpp's limit)");
                if (max != kUnbounded && max < min) fail(at, "the most repetitions is smaller than the least");
                if (max != kUnbounded && max > kMaxRepetition) max = kUnbounded; // as llama.cpp reads it
                repeat(at, min, max);
            } else {
                break;
            }
        }
        return p;
    }

    const char *parse_token(const char *pos, bool negated) {
        const char *p = pos + 1;
        if (*p == '[') {
            uint64_t id = 0;
            p = parse_int(p + 1, &id);
            if (vocab_ && id >= static_cast<uint64_t>(llama_vocab_n_tokens(vocab_))) {
                fail(pos, "token " + std::to_string(id) + " is not in this model's vocabulary");
            }
            if (*p != ']') fail(p, "expected ']'");
            if (p[1] != '>') fail(p + 1, "expected '>'");
            if (!negated) named_.push_back(static_cast<llama_token>(id));
            return p + 2;
        }
        while (*p && *p != '>') ++p;
        if (*p != '>') fail(pos, "this token is not closed with '>'");
        ++p;
        llama_token toks[2];
        const int32_t n = vocab_ ? llama_tokenize(vocab_, pos, static_cast<int32_t>(p - pos), toks, 2, false, true) : 0;
        if (n != 1) fail(pos, "'" + std::string(pos, p) + "' is not a single token of this model");
        if (!negated) named_.push_back(toks[0]);
        return p;
    }

    bool item_nullable(const Item &it) const { return it.min == 0 || (it.is_rule && nullable_[it.rule]); }

    void compute_nullable() {
        nullable_.assign(rules_.size(), false);
        for (bool changed = true; changed;) {
            changed = false;
            for (size_t r = 0; r < rules_.size(); ++r) {
                if (nullable_[r]) continue;
                for (const auto &alt : rules_[r].alternatives) {
                    if (std::all_of(alt.begin(), alt.end(), [&](const Item &it) { return item_nullable(it); })) {
                        nullable_[r] = changed = true;
                        break;
                    }
                }
            }
        }
    }

    // llama.cpp rewrites x* as x' ::= x x' | (x+ and x{m,} alike): when x
    // can match nothing, x' reaches itself without consuming input.
    void check_repetitions() const {
        for (const Rule &r : rules_) {
            for (const auto &alt : r.alternatives) {
                for (const Item &it : alt) {
                    if (it.unbounded && (it.unbounded_empty || (it.is_rule && nullable_[it.rule]))) {
                        fail(it.offset, "rule '" + r.name + "' repeats without bound something that can match "
                                        "nothing (llama.cpp cannot match that: make the repeated part non-empty)");
                    }
                }
            }
        }
    }

    // The rules each rule can begin with: its items up to the first one that
    // must consume input.
    std::vector<uint32_t> leftmost(size_t r) const {
        std::vector<uint32_t> out;
        for (const auto &alt : rules_[r].alternatives) {
            for (const Item &it : alt) {
                if (it.is_rule) out.push_back(it.rule);
                if (!item_nullable(it)) break;
            }
        }
        return out;
    }

    // A cycle among the leftmost edges is left recursion; the longest chain
    // of them is how deep llama.cpp's matcher recurses.
    void check_left_recursion() const {
        const size_t n = rules_.size();
        std::vector<std::vector<uint32_t>> edges(n);
        for (size_t r = 0; r < n; ++r) edges[r] = leftmost(r);
        enum : uint8_t { kNew, kOpen, kDone };
        std::vector<uint8_t> state(n, kNew);
        std::vector<size_t> depth(n, 0);
        for (size_t start = 0; start < n; ++start) {
            if (state[start] != kNew) continue;
            std::vector<std::pair<uint32_t, size_t>> stack{{static_cast<uint32_t>(start), 0}};
            state[start] = kOpen;
            while (!stack.empty()) {
                auto &top = stack.back();
                const uint32_t r = top.first;
                if (top.second < edges[r].size()) {
                    const uint32_t next = edges[r][top.second++];
                    if (state[next] == kOpen) {
                        fail(rules_[next].offset, "rule '" + rules_[next].name + "' is left-recursive: it can reach "
                                                  "itself again before matching any input");
                    }
                    if (state[next] == kNew) {
                        state[next] = kOpen;
                        stack.push_back({next, 0});
                    }
                    continue;
                }
                size_t d = 0;
                for (uint32_t next : edges[r]) d = std::max(d, depth[next] + 1);
                depth[r] = d;
                if (d > kMaxLeftmostChain) {
                    fail(rules_[r].offset, "rule '" + rules_[r].name + "' begins with a chain of more than " +
                                               std::to_string(kMaxLeftmostChain) + " rules");
                }
                state[r] = kDone;
                stack.pop_back();
            }
        }
    }

public:
    const std::vector<llama_token> &named_tokens() const { return named_; }
    size_t line_of(size_t offset) const {
        return 1 + static_cast<size_t>(std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(std::min(offset, text_.size())), '\n'));
    }
    size_t column_of(size_t offset) const {
        offset = std::min(offset, text_.size());
        const size_t nl = offset == 0 ? std::string::npos : text_.rfind('\n', offset - 1);
        return nl == std::string::npos ? offset + 1 : offset - nl;
    }

private:
    const std::string &text_;
    const char *s_;
    const llama_vocab *vocab_;
    std::map<std::string, uint32_t> names_;
    std::vector<Rule> rules_;
    std::vector<bool> nullable_;
    std::vector<llama_token> named_; // tokens matched by <...>
    uint64_t expanded_ = 0;
    int depth_ = 0;
};

} // namespace

std::string check_grammar(const std::string &text, const std::string &root, const llama_vocab *vocab,
                          std::vector<llama_token> *named_tokens) {
    if (text.size() > kMaxText) return "the grammar is longer than " + std::to_string(kMaxText) + " bytes";
    if (text.find('\0') != std::string::npos) return "the grammar contains a NUL character";
    Checker c(text, vocab);
    try {
        c.parse();
        c.check(root);
        if (named_tokens) *named_tokens = c.named_tokens();
    } catch (const Failure &f) {
        return "line " + std::to_string(c.line_of(f.offset)) + ", column " + std::to_string(c.column_of(f.offset)) +
               ": " + f.why;
    } catch (const std::exception &e) {
        return std::string("the grammar could not be read: ") + e.what();
    }
    return "";
}

} // namespace llmodel
