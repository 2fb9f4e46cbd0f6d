# frozen_string_literal: true

# An ActiveRecord 6.1 application (Debian ruby-activerecord + ruby-pg) against a table whose
# `email` column an operator protected with envelope.protect_column. Driven by
# ../test_activerecord.py; the model and the migration are plain ActiveRecord, with no
# pg_envelope code.
#
#   ruby orm_test.rb schema    the app's migration creates the table (before protect_column)
#   ruby orm_test.rb dml       the app's CRUD, pausing twice so that the driver can read the
#                              stored ciphertext as the superuser
#   ruby orm_test.rb typemap   what ActiveRecord makes of the protected column's type
#
# Environment: DATABASE_URL, AR_ROUTE (direct | pgbouncer), AR_TABLE_PREFIX, and for the
# typemap phase AR_INITIALIZER=1 to load the optional initializer below.
#
# Protocol with the driver: lines "@@ {json}" on stdout; after a "pause" event the script
# waits for one line on stdin. Everything else on stdout (migration output) is ignored.
# ActiveRecord's warnings go to stderr, which the driver inspects.

require "json"
require "stringio"
require "minitest"
require "active_record"

if ENV["AR_INITIALIZER"] == "1"
  # Optional, config/initializers/pg_envelope.rb: tell ActiveRecord 6.1 that the protected
  # column's type reads and writes as a string. Without it AR warns "unknown OID ...: failed to
  # recognize type of 'email'. It will be treated as String." once per connection, types the
  # attribute as ActiveModel::Type::Value (no casting), and db/schema.rb leaves the table out.
  require "active_record/connection_adapters/postgresql_adapter"
  ActiveRecord::ConnectionAdapters::PostgreSQLAdapter.prepend(Module.new { def initialize_type_map(m = type_map) = super.tap { m.alias_type "protected_text", "varchar" } })
end

ROUTE = ENV.fetch("AR_ROUTE")

config = { url: ENV.fetch("DATABASE_URL") }
if ROUTE == "pgbouncer"
  # pgbouncer in transaction pooling mode: the standard ActiveRecord settings for it (nothing
  # to do with pg_envelope): no named server-side prepared statements, no session advisory
  # lock around migrations.
  config[:prepared_statements] = false
  config[:advisory_locks] = false
end
ActiveRecord::Base.logger = Logger.new($stderr, level: :warn)
# Only to keep the direct and pgbouncer runs apart in one database (people, schema_migrations
# and ar_internal_metadata all get the prefix): config.active_record.table_name_prefix.
ActiveRecord::Base.table_name_prefix = ENV.fetch("AR_TABLE_PREFIX")
ActiveRecord::Base.establish_connection(config)

# db/migrate/20240101000000_create_people.rb
class CreatePeople < ActiveRecord::Migration[6.1]
  def change
    create_table :people do |t|
      t.string :email, null: false
      t.string :name
    end
    add_index :people, :email, unique: true
  end
end

# app/models/person.rb
class Person < ActiveRecord::Base
end

class App
  include Minitest::Assertions
  attr_accessor :assertions

  def initialize
    @assertions = 0
    $stdout.sync = true
  end

  def emit(event, **data)
    puts "@@ #{JSON.generate({ event: event, **data })}"
  end

  def pause(event, **data)
    emit("pause", step: event, **data)
    line = $stdin.gets
    raise "driver went away at #{event}" unless line&.strip == "go"
  end

  # As `rails db:migrate` runs it (schema_migrations, DDL transaction, advisory lock direct).
  def schema
    migration = CreatePeople.new("CreatePeople", 20240101000000)
    ActiveRecord::Migrator.new(:up, [migration], ActiveRecord::Base.connection.schema_migration).migrate
    assert ActiveRecord::Base.connection.table_exists?(Person.table_name)
    assert_equal ["20240101000000"], ActiveRecord::Base.connection.schema_migration.all_versions
    emit("done", table: Person.table_name)
  end

  def dml
    # create, get by pk
    alice = Person.create!(email: "alice@example.org", name: "Alice")
    assert alice.persisted?
    assert_equal "alice@example.org", Person.find(alice.id).email
    assert_equal "Alice", Person.find(alice.id).name

    # bulk: create with an array, insert_all (ON CONFLICT DO NOTHING skips a duplicate email),
    # insert_all! (no ON CONFLICT: a duplicate raises)
    bulk = Person.create!([{ email: "bob@example.org", name: "Bob" },
                           { email: "carol@example.org", name: "Carol" }])
    assert_equal 2, bulk.size
    assert bulk.all?(&:persisted?)
    inserted = Person.insert_all([{ email: "dave@example.org", name: "Dave" },
                                  { email: "erin@example.org", name: "Erin" },
                                  { email: "bob@example.org", name: "not Bob" }])
    assert_equal 2, inserted.rows.size
    assert_equal "Bob", Person.find_by!(email: "bob@example.org").name
    assert_raises(ActiveRecord::RecordNotUnique) do
      Person.insert_all!([{ email: "heidi@example.org", name: "Heidi" },
                          { email: "carol@example.org", name: "not Carol" }])
    end
    assert_nil Person.find_by(email: "heidi@example.org")
    assert_equal 5, Person.count

    # update of another attribute: a partial write, the email's ciphertext stays as it is
    pause("created", id: alice.id)
    alice.update!(name: "Alice Liddell")
    assert_equal ["name"], alice.saved_changes.keys
    assert_equal "Alice Liddell", alice.reload.name
    assert_equal "alice@example.org", alice.email
    pause("renamed", id: alice.id)

    # update of the protected attribute
    alice.update!(email: "alice@wonderland.example")
    assert_equal "alice@wonderland.example", alice.reload.email
    assert_nil Person.find_by(email: "alice@example.org")
    assert_equal alice.id, Person.find_by(email: "alice@wonderland.example")&.id
    pause("email_changed", id: alice.id)

    # upsert (ON CONFLICT ("email") DO UPDATE), upsert_all, find_or_create_by
    bob_id = Person.find_by!(email: "bob@example.org").id
    carol_id = Person.find_by!(email: "carol@example.org").id
    Person.upsert({ email: "bob@example.org", name: "Robert" }, unique_by: :email)
    assert_equal [[bob_id, "Robert"]], Person.where(email: "bob@example.org").pluck(:id, :name)
    assert_equal 5, Person.count
    Person.upsert_all([{ email: "carol@example.org", name: "Caroline" },
                       { email: "frank@example.org", name: "Frank" }], unique_by: :email)
    assert_equal [[carol_id, "Caroline"]], Person.where(email: "carol@example.org").pluck(:id, :name)
    assert_equal "Frank", Person.find_by!(email: "frank@example.org").name
    assert_equal 6, Person.count
    grace = Person.find_or_create_by!(email: "grace@example.org") { |p| p.name = "Grace" }
    assert grace.previously_new_record?
    again = Person.find_or_create_by!(email: "grace@example.org") { |p| p.name = "not Grace" }
    refute again.previously_new_record?
    assert_equal [grace.id, "Grace"], [again.id, again.name]
    assert_equal 7, Person.count

    # equality search (blind index), exists?, count, IN list
    assert_equal ["Caroline"], Person.where(email: "carol@example.org").pluck(:name)
    assert Person.exists?(email: "frank@example.org")
    refute Person.exists?(email: "nobody@example.org")
    assert_equal 2, Person.where(email: ["bob@example.org", "frank@example.org", "nobody@example.org"]).count
    assert_equal 1, Person.where(email: "dave@example.org", name: "Dave").count
    assert_equal 7, Person.count

    # uniqueness of the protected column
    assert_raises(ActiveRecord::RecordNotUnique) { Person.create!(email: "frank@example.org", name: "Impostor") }
    assert_raises(ActiveRecord::RecordNotUnique) { alice.update!(email: "bob@example.org") }
    assert_equal "alice@wonderland.example", alice.reload.email
    assert_equal 7, Person.count

    # destroy, delete_all by the protected column
    Person.find_by!(email: "frank@example.org").destroy!
    refute Person.exists?(email: "frank@example.org")
    assert_equal 1, Person.where(email: "erin@example.org").delete_all
    assert_equal 5, Person.count

    # a second connection: ActiveRecord builds its type map per connection
    ActiveRecord::Base.connection_pool.disconnect!
    assert_equal "Robert", Person.find(bob_id).name

    emit("done", count: Person.count,
                 emails: Person.order(:id).pluck(:email),
                 names: Person.order(:id).pluck(:name),
                 plaintexts: %w[alice bob carol dave erin frank grace heidi].map { |n| "#{n}@example.org" } +
                             ["alice@wonderland.example"])
  end

  # What ActiveRecord makes of the column: its attribute type, warnings per connection, and
  # what db/schema.rb (the Rails default schema format) gets for the table.
  def typemap
    email = ENV["AR_INITIALIZER"] == "1" ? "judy@example.org" : "ivan@example.org"
    warnings = capture_stderr { Person.columns_hash; Person.first }
    found = nil
    warnings += capture_stderr do
      ActiveRecord::Base.connection_pool.disconnect!
      Person.create!(email: email, name: "Ivan or Judy")
      found = Person.find_by(email: email)&.email # a result with the column, on a new connection
    end
    dump = StringIO.new
    ActiveRecord::SchemaDumper.dump(ActiveRecord::Base.connection, dump)
    table_dump = dump.string.lines.select { |l| l.include?(Person.table_name) || l.include?("email") || l.start_with?("#   ") }
    emit("done", warnings: warnings.lines.map(&:chomp),
                 sql_type: Person.columns_hash["email"].sql_type,
                 attribute_type: Person.type_for_attribute(:email).type&.to_s,
                 cast_integer: Person.new(email: 5).email,
                 email: email, found: found,
                 schema_rb: table_dump.map(&:rstrip))
  end

  def capture_stderr
    saved = $stderr
    $stderr = StringIO.new
    yield
    $stderr.string
  ensure
    $stderr = saved
  end
end

phase = ARGV.fetch(0)
raise ArgumentError, "unknown phase #{phase}" unless %w[schema dml typemap].include?(phase)
App.new.public_send(phase)
