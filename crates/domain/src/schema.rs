//! The entity kinds of the data model and their fields: names, labels in Chinese and English,
//! value types and who may write them. Validation, the stores and the console read this table.

use std::fmt;

/// The kinds of entity Baylink captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// 房屋 / 出租屋: a house or rental unit.
    House,
    /// 人员: a person.
    Person,
    /// 居住: a person living in a house.
    Residence,
    /// 车辆: a vehicle.
    Vehicle,
    /// 入户走访: an officer's visit to a house.
    Visit,
    /// 矛盾纠纷: a dispute.
    Dispute,
}

impl EntityKind {
    /// Every kind, in the order forms and lists show them.
    pub const ALL: [EntityKind; 6] = [
        EntityKind::House,
        EntityKind::Person,
        EntityKind::Residence,
        EntityKind::Vehicle,
        EntityKind::Visit,
        EntityKind::Dispute,
    ];

    /// The kind's name on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::House => "house",
            EntityKind::Person => "person",
            EntityKind::Residence => "residence",
            EntityKind::Vehicle => "vehicle",
            EntityKind::Visit => "visit",
            EntityKind::Dispute => "dispute",
        }
    }

    /// The kind named on the wire, if this version knows it.
    pub fn parse(name: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind's Chinese name.
    pub fn label_zh(self) -> &'static str {
        match self {
            EntityKind::House => "房屋",
            EntityKind::Person => "人员",
            EntityKind::Residence => "居住",
            EntityKind::Vehicle => "车辆",
            EntityKind::Visit => "走访",
            EntityKind::Dispute => "矛盾纠纷",
        }
    }

    /// The fields of this kind, the common ones last.
    pub fn fields(self) -> impl Iterator<Item = &'static FieldSpec> {
        let own: &'static [FieldSpec] = match self {
            EntityKind::House => HOUSE,
            EntityKind::Person => PERSON,
            EntityKind::Residence => RESIDENCE,
            EntityKind::Vehicle => VEHICLE,
            EntityKind::Visit => VISIT,
            EntityKind::Dispute => DISPUTE,
        };
        own.iter().chain(COMMON)
    }

    /// The spec of one field of this kind.
    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        self.fields().find(|f| f.name == name)
    }

    /// The value a field takes when a form leaves it empty, if it has one: a person's
    /// document is a resident ID card unless another is chosen.
    pub fn default_value(self, field: &str) -> Option<&'static str> {
        match (self, field) {
            (EntityKind::Person, "id_type") => Some("resident_id"),
            _ => None,
        }
    }
}

/// Every field, of any kind, that names another record, each once: the references in schema
/// order, then a merge's redirect. What an index of who points at a record covers, in the
/// order its condition lists them.
pub fn reference_fields() -> Vec<&'static str> {
    let mut names = Vec::new();
    let redirect = |ty: &FieldType| matches!(ty, FieldType::Redirect);
    for last in [false, true] {
        for kind in EntityKind::ALL {
            for spec in kind.fields() {
                let wanted = if last {
                    redirect(&spec.ty)
                } else {
                    matches!(spec.ty, FieldType::Ref(_))
                };
                if wanted && !names.contains(&spec.name) {
                    names.push(spec.name);
                }
            }
        }
    }
    names
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One allowed value of a choice field.
#[derive(Debug)]
pub struct Choice {
    /// Stored code.
    pub code: &'static str,
    /// Chinese label (also accepted as input).
    pub zh: &'static str,
}

/// The type of a field's value, which decides how input is parsed and stored.
#[derive(Debug)]
pub enum FieldType {
    /// A short text (a name, an address) up to a number of characters: half-width, white space
    /// collapsed.
    Text(usize),
    /// Prose as typed (notes, descriptions, outcomes) up to a number of characters: trimmed, its
    /// line breaks and its Chinese punctuation kept.
    Prose(usize),
    /// One of a fixed set of codes.
    Choice(&'static [Choice]),
    /// A calendar date `YYYY-MM-DD`.
    Date,
    /// A local date-time `YYYY-MM-DD HH:MM:SS`.
    DateTime,
    /// A whole number in a range.
    Int(i64, i64),
    /// An identity document number, checked by the document type (`id_type`).
    IdNumber,
    /// A resident ID number (GB 11643), always.
    ResidentId,
    /// A vehicle plate (GA 36).
    Plate,
    /// A mobile or landline number.
    Phone,
    /// The id of another entity of a kind.
    Ref(EntityKind),
    /// The id of another entity of the same kind (where a merged duplicate redirects).
    Redirect,
    /// A GPS position, entered as `lat,lon`, stored as `{"lat":…,"lon":…}`.
    Geo,
    /// A 12-digit village (village committee) code.
    Village,
    /// A standard address code (标准地址编码): letters and digits.
    AddressCode,
    /// Several names or person ids, entered separated by `;` or `、`.
    TextList,
    /// True or false.
    Bool,
}

/// Who writes a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The officer, in a capture or edit form.
    Officer,
    /// Derived from other fields by validation; an officer may enter it where it must agree.
    Derived,
    /// Set by the store or the station (creation, review, deletion), never by a form.
    System,
}

/// One field of an entity kind.
#[derive(Debug)]
pub struct FieldSpec {
    /// Name on the wire and in storage.
    pub name: &'static str,
    /// Chinese label.
    pub zh: &'static str,
    /// English label.
    pub en: &'static str,
    /// Value type.
    pub ty: FieldType,
    /// Whether a record needs it.
    pub required: bool,
    /// Who writes it.
    pub writer: Writer,
}

impl FieldSpec {
    /// Whether its value names another record (a reference, or a merge's redirect).
    pub fn names_a_record(&self) -> bool {
        matches!(self.ty, FieldType::Ref(_) | FieldType::Redirect)
    }

    /// The Chinese label of a choice code of this field, if it is one.
    pub fn choice_label(&self, code: &str) -> Option<&'static str> {
        match self.ty {
            FieldType::Choice(choices) => choices.iter().find(|c| c.code == code).map(|c| c.zh),
            _ => None,
        }
    }
}

const fn f(name: &'static str, zh: &'static str, en: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        zh,
        en,
        ty,
        required: false,
        writer: Writer::Officer,
    }
}

const fn req(name: &'static str, zh: &'static str, en: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        zh,
        en,
        ty,
        required: true,
        writer: Writer::Officer,
    }
}

const fn derived(
    name: &'static str,
    zh: &'static str,
    en: &'static str,
    ty: FieldType,
) -> FieldSpec {
    FieldSpec {
        name,
        zh,
        en,
        ty,
        required: false,
        writer: Writer::Derived,
    }
}

const fn system(
    name: &'static str,
    zh: &'static str,
    en: &'static str,
    ty: FieldType,
) -> FieldSpec {
    FieldSpec {
        name,
        zh,
        en,
        ty,
        required: false,
        writer: Writer::System,
    }
}

macro_rules! choices {
    ($($code:literal => $zh:literal),+ $(,)?) => { &[$(Choice { code: $code, zh: $zh }),+] };
}

/// Gender, as derived from a resident ID number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gender {
    /// 男.
    Male,
    /// 女.
    Female,
}

impl Gender {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
        }
    }
}

/// Identity document types.
pub const ID_TYPES: &[Choice] = choices![
    "resident_id" => "居民身份证",
    "passport" => "护照",
    "hk_macau_permit" => "港澳居民来往内地通行证",
    "taiwan_permit" => "台湾居民来往大陆通行证",
    "other" => "其他证件",
];
/// Genders.
pub const GENDERS: &[Choice] = choices!["male" => "男", "female" => "女"];
/// Population categories (户籍 / 流动 / 境外).
pub const PERSON_CATEGORIES: &[Choice] =
    choices!["registered" => "户籍人口", "floating" => "流动人口", "overseas" => "境外人员"];
/// Uses of a house.
pub const HOUSE_USES: &[Choice] = choices![
    "rental" => "出租", "self_occupied" => "自住", "dormitory" => "宿舍",
    "shop" => "商铺", "factory" => "厂房", "other" => "其他",
];
/// States of a house.
pub const HOUSE_STATUSES: &[Choice] =
    choices!["in_use" => "在用", "vacant" => "空置", "demolished" => "已拆除"];
/// How a person relates to the house they live in.
pub const RELATIONS: &[Choice] = choices![
    "tenant" => "租客", "landlord" => "房东", "family" => "家属",
    "employee" => "员工", "other" => "其他",
];
/// Plate kinds (号牌种类), simplified from GA 36.
pub const PLATE_KINDS: &[Choice] = choices![
    "small" => "小型汽车", "large" => "大型汽车", "new_energy_small" => "小型新能源汽车",
    "new_energy_large" => "大型新能源汽车", "trailer" => "挂车", "coach" => "教练汽车",
    "police" => "警用汽车", "hong_kong" => "港车", "macau" => "澳车",
    "motorcycle" => "摩托车", "other" => "其他",
];
/// Vehicle types.
pub const VEHICLE_TYPES: &[Choice] = choices![
    "car" => "汽车", "truck" => "货车", "motorcycle" => "摩托车",
    "e_bike" => "电动自行车", "other" => "其他",
];
/// Kinds of dispute.
pub const DISPUTE_KINDS: &[Choice] = choices![
    "neighbour" => "邻里纠纷", "family" => "婚姻家庭", "tenancy" => "租赁纠纷",
    "labour" => "劳资纠纷", "property" => "物业纠纷", "other" => "其他",
];
/// States of a dispute.
pub const DISPUTE_STATUSES: &[Choice] =
    choices!["open" => "未调处", "mediated" => "已调解", "referred" => "已移交"];
/// Review states of every record.
pub const REVIEW_STATUSES: &[Choice] =
    choices!["pending" => "待审核", "approved" => "已通过", "returned" => "已退回"];

use FieldType as T;

static COMMON: &[FieldSpec] = &[
    system("created_by", "采集人", "captured by", T::Text(64)),
    system("created_at", "采集时间", "captured at", T::DateTime),
    system(
        "review_status",
        "审核状态",
        "review status",
        T::Choice(REVIEW_STATUSES),
    ),
    system(
        "review_comment",
        "审核意见",
        "review comment",
        T::Prose(500),
    ),
    system("deleted", "已删除", "deleted", T::Bool),
    system("merged_into", "已合并到", "merged into", T::Redirect),
];

static HOUSE: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    req("address", "地址", "address", T::Text(200)),
    f(
        "address_code",
        "标准地址编码",
        "standard address code",
        T::AddressCode,
    ),
    f("building", "楼栋", "building", T::Text(40)),
    f("unit", "单元", "unit", T::Text(40)),
    f("room", "房号", "room", T::Text(40)),
    req("use", "房屋用途", "use", T::Choice(HOUSE_USES)),
    f("landlord_name", "房东姓名", "landlord name", T::Text(50)),
    f(
        "landlord_id_number",
        "房东身份证号",
        "landlord ID number",
        T::ResidentId,
    ),
    f("landlord_phone", "房东电话", "landlord phone", T::Phone),
    f("room_count", "房间数", "room count", T::Int(0, 10_000)),
    f("location", "GPS位置", "GPS location", T::Geo),
    req("status", "房屋状态", "status", T::Choice(HOUSE_STATUSES)),
    f("notes", "备注", "notes", T::Prose(1000)),
];

static PERSON: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    req("id_type", "证件类型", "ID type", T::Choice(ID_TYPES)),
    req("id_number", "证件号码", "ID number", T::IdNumber),
    req("name", "姓名", "name", T::Text(50)),
    derived("gender", "性别", "gender", T::Choice(GENDERS)),
    derived("birth_date", "出生日期", "birth date", T::Date),
    f("ethnicity", "民族", "ethnicity", T::Text(20)),
    f("phone", "联系电话", "phone", T::Phone),
    f(
        "household_address",
        "户籍地址",
        "household registration address",
        T::Text(200),
    ),
    derived(
        "origin_code",
        "籍贯地区码",
        "origin region code",
        T::Text(6),
    ),
    derived("origin_name", "籍贯", "origin region", T::Text(60)),
    derived(
        "category",
        "人员类别",
        "category",
        T::Choice(PERSON_CATEGORIES),
    ),
    f("employer", "工作单位", "employer", T::Text(100)),
    f("occupation", "职业", "occupation", T::Text(50)),
    f("notes", "备注", "notes", T::Prose(1000)),
];

static RESIDENCE: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    req("person", "人员", "person", T::Ref(EntityKind::Person)),
    req("house", "房屋", "house", T::Ref(EntityKind::House)),
    f("room", "房号", "room", T::Text(40)),
    req("moved_in", "入住日期", "moved-in date", T::Date),
    f("moved_out", "搬离日期", "moved-out date", T::Date),
    req("relation", "与房屋关系", "relation", T::Choice(RELATIONS)),
    f("notes", "备注", "notes", T::Prose(1000)),
];

static VEHICLE: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    req("plate", "号牌号码", "plate", T::Plate),
    derived(
        "plate_kind",
        "号牌种类",
        "plate kind",
        T::Choice(PLATE_KINDS),
    ),
    req(
        "vehicle_type",
        "车辆类型",
        "vehicle type",
        T::Choice(VEHICLE_TYPES),
    ),
    f("brand", "品牌", "brand", T::Text(50)),
    f("colour", "颜色", "colour", T::Text(20)),
    f("owner", "车主", "owner", T::Ref(EntityKind::Person)),
    f(
        "house",
        "常驻房屋",
        "usual house",
        T::Ref(EntityKind::House),
    ),
    f("notes", "备注", "notes", T::Prose(1000)),
];

static VISIT: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    req("house", "房屋", "house", T::Ref(EntityKind::House)),
    req("time", "走访时间", "time", T::DateTime),
    f("officer", "走访民警", "officer", T::Text(64)),
    req("outcome", "走访情况", "outcome", T::Prose(500)),
    f("notes", "备注", "notes", T::Prose(1000)),
];

static DISPUTE: &[FieldSpec] = &[
    req("village", "所属村（社区）", "village", T::Village),
    f("house", "房屋", "house", T::Ref(EntityKind::House)),
    req("parties", "当事人", "parties", T::TextList),
    req("kind", "纠纷类型", "kind", T::Choice(DISPUTE_KINDS)),
    req("description", "纠纷描述", "description", T::Prose(2000)),
    req("status", "调处状态", "status", T::Choice(DISPUTE_STATUSES)),
    f("outcome", "调处结果", "outcome", T::Prose(1000)),
    req("reported_on", "登记日期", "reported on", T::Date),
    f("closed_on", "办结日期", "closed on", T::Date),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_fields_are_the_references_then_the_redirect() {
        assert_eq!(
            reference_fields(),
            ["person", "house", "owner", "merged_into"]
        );
    }

    #[test]
    fn every_kind_round_trips_and_has_a_village_and_unique_fields() {
        for kind in EntityKind::ALL {
            assert_eq!(EntityKind::parse(kind.as_str()), Some(kind));
            assert!(kind.field("village").is_some_and(|f| f.required), "{kind}");
            let mut names: Vec<_> = kind.fields().map(|f| f.name).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "{kind} repeats a field");
        }
        assert_eq!(EntityKind::parse("boat"), None);
    }
}
